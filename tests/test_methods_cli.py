"""Each of the paper's four methods trains with and without logit standardization through ``lightning-kd fit``.

The loss of the demo's KD config is swapped on the command line for each method (the paper presets need CIFAR-100
and published teachers; tests/test_presets.py builds those). MLKD also turns the data module's two views on.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from lightning_kd.cli import main
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
KD_CONFIG = str(REPO / "configs/demo/kd.yaml")
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.log_every_n_steps=1",
    "--data.init_args.image_size=16",
]
LOSSES = {
    "kd": ("KD", {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}, ["ce", "kd"]),
    "dkd": ("DKD", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 2}, ["ce", "tckd", "nckd"]),
    "mlkd": ("MLKD", {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}, ["ce", "kd", "cc", "bc"]),
    "ctkd": ("CTKD", {"t_start": 1.0, "t_end": 20.0, "decay_epochs": 2}, ["ce", "kd"]),
}


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    path = tmp_path / "teacher.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), path)
    return path


@pytest.mark.parametrize("standardize", [False, True], ids=["plain", "ls"])
@pytest.mark.parametrize("method", list(LOSSES))
def test_method_trains_through_the_cli(method, standardize, tmp_path, monkeypatch, teacher_file):
    monkeypatch.chdir(tmp_path)
    name, args, terms = LOSSES[method]
    loss = [f"--model.init_args.loss=lightning_kd.losses.{name}"]
    loss += [f"--model.init_args.loss.init_args.{k}={v}" for k, v in args.items()]
    loss += [f"--model.init_args.loss.init_args.standardize={str(standardize).lower()}"]
    views = ["--data.init_args.two_views=true"] if method == "mlkd" else []
    status = main(
        ["fit", "--config", KD_CONFIG, *TINY, *loss, *views, f"--model.init_args.teacher_weights={teacher_file}"]
    )
    assert status == 0
    with open(tmp_path / "runs/demo/kd/latest/metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epoch_rows = [r for r in rows if r.get("train/loss_epoch")]
    assert len(epoch_rows) == 1
    for row in epoch_rows:
        parts = sum(float(row[f"train/{term}_epoch"]) for term in terms)
        assert math.isclose(float(row["train/loss_epoch"]), parts, rel_tol=1e-5)
    assert any(r.get("val/acc1") for r in rows)
    # CTKD's learned temperature is logged once per epoch, inside its range [t_start, t_start + t_end]
    temperatures = [float(r["train/temperature"]) for r in rows if r.get("train/temperature")]
    if method == "ctkd":
        assert len(temperatures) == 1
        assert 1.0 < temperatures[0] < 21.0
    else:
        assert temperatures == []
    record = torch.load(tmp_path / "runs/demo/kd/latest/checkpoints/last.ckpt", weights_only=True)["hyper_parameters"]
    assert record["loss.class_path"] == f"lightning_kd.losses.{method}.{name}"
    assert record["loss.standardize"] is standardize


def test_mlkd_without_two_views_says_how_to_turn_them_on(tmp_path, monkeypatch, teacher_file, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(
        [
            "fit",
            "--config",
            KD_CONFIG,
            *TINY,
            "--model.init_args.loss=lightning_kd.losses.MLKD",
            f"--model.init_args.teacher_weights={teacher_file}",
        ]
    )
    assert status == 2
    assert "two_views: true" in capsys.readouterr().err
