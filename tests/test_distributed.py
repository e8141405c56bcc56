"""DDP with 2 CPU processes (gloo): a frozen, identical teacher on every rank and exactly synced metrics."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd.data import DigitsDataModule
from lightning_kd.models import create_model
from lightning_kd.models.checkpoint import load_weights
from tests.helpers import ddp_fit

ROOT = Path(__file__).resolve().parents[1]
# 361 validation images: 181 + 180 per rank (a padding sampler would repeat one); neither a multiple of the batch
VAL_FRACTION = 0.2005


def _accuracy(model: torch.nn.Module, data: DigitsDataModule) -> tuple[int, int]:
    """(correct, total) of ``model`` over the whole validation split, in one process."""
    images, targets = data.val_set.tensors
    model.eval()
    with torch.no_grad():
        predictions = model(images).argmax(dim=1)
    return int((predictions == targets).sum()), len(targets)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    """One 2-process ``fit`` shared by the tests below (a DDP start-up costs several seconds)."""
    out = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(1)
    teacher_path = out / "teacher.pt"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher_path)
    result = subprocess.run(
        [sys.executable, str(Path(ddp_fit.__file__)), str(out), str(teacher_path), str(VAL_FRACTION), "ddp"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, teacher_path


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def val_data() -> DigitsDataModule:
    data = DigitsDataModule(
        batch_size=ddp_fit.BATCH_SIZE, image_size=ddp_fit.IMAGE_SIZE, val_fraction=VAL_FRACTION, seed=0
    )
    data.setup("validate")
    n = len(data.val_set)
    # the set-up this test is about: the split does not divide evenly between the ranks (a padding sampler would
    # count one sample twice) and each rank's last validation batch is a partial one
    assert n % 2 == 1
    assert (n // 2) % ddp_fit.VAL_BATCH_SIZE != 0
    assert (n // 2 + 1) % ddp_fit.VAL_BATCH_SIZE != 0
    return data


def test_both_ranks_ran_and_the_teacher_stayed_bit_identical(ddp_run):
    out, teacher_path = ddp_run
    teacher = load_weights(create_model("resnet8", num_classes=10), teacher_path)
    expected = ddp_fit.state_hash(teacher)
    ranks = _ranks(out)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    # weights and BatchNorm buffers, num_batches_tracked included, equal the loaded file on every rank
    assert [r["teacher_sha"] for r in ranks] == [expected, expected]
    assert not any(r["teacher_requires_grad"] or r["teacher_training"] for r in ranks)
    # DDP kept the students in step, and they did train
    assert ranks[0]["student_sha"] == ranks[1]["student_sha"]
    student = create_model("resnet8", num_classes=10)
    assert ddp_fit.state_hash(student) != ranks[0]["student_sha"]


def test_logged_val_acc1_equals_single_process_evaluation(ddp_run, val_data):
    out, _ = ddp_run
    student = create_model("resnet8", num_classes=10)
    student.load_state_dict(torch.load(out / "student_final.pt", weights_only=True))
    correct, total = _accuracy(student, val_data)
    assert 0 < correct < total
    ranks = _ranks(out)
    assert len(ranks[0]["epochs"]) == 2
    for rank in ranks:
        assert rank["epochs"][-1]["val/acc1"] == pytest.approx(correct / total, abs=1e-7)
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        logged = [float(row["val/acc1"]) for row in csv.DictReader(f) if row.get("val/acc1")]
    assert logged[-1] == pytest.approx(correct / total, abs=1e-7)


def test_teacher_val_acc1_is_the_same_on_both_ranks_and_exact(ddp_run, val_data):
    out, teacher_path = ddp_run
    correct, total = _accuracy(load_weights(create_model("resnet8", num_classes=10), teacher_path), val_data)
    values = [rank["epochs"][0]["teacher/val_acc1"] for rank in _ranks(out)]
    assert values[0] == values[1] == pytest.approx(correct / total, abs=1e-7)
    # val/acc1_best follows the synced val/acc1 identically on both ranks
    best = [[epoch["val/acc1_best"] for epoch in rank["epochs"]] for rank in _ranks(out)]
    assert best[0] == best[1]
    assert best[0][-1] == max(epoch["val/acc1"] for epoch in _ranks(out)[0]["epochs"])


# ---------------------------------------------------------------- the strategy overlays


@pytest.mark.parametrize(
    ("overlay", "strategy_class"),
    [("configs/strategy/ddp.yaml", "DDPStrategy"), ("configs/strategy/fsdp.yaml", "FSDPStrategy")],
)
def test_strategy_overlays_build_their_strategy(overlay, strategy_class):
    from jsonargparse import ArgumentParser
    from lightning.pytorch import strategies

    from lightning_kd.strategies import FrozenApartPolicy

    trainer = yaml.safe_load((ROOT / overlay).read_text())["trainer"]
    assert trainer["devices"] == "auto"
    parser = ArgumentParser()
    parser.add_subclass_arguments(strategies.Strategy, "strategy")
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": trainer["strategy"]})).strategy
    assert type(strategy).__name__ == strategy_class
    if strategy_class == "FSDPStrategy":
        assert isinstance(strategy.kwargs["auto_wrap_policy"], FrozenApartPolicy)
    else:
        assert strategy._ddp_kwargs["find_unused_parameters"] is False


def test_ddp_overlay_merges_over_a_preset(capsys):
    from lightning_kd.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/demo/kd.yaml"),
                "--config",
                str(ROOT / "configs/strategy/ddp.yaml"),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["strategy"]["class_path"] == "lightning.pytorch.strategies.DDPStrategy"
    assert config["trainer"]["devices"] == "auto"
    assert config["model"]["class_path"] == "lightning_kd.DistillationModule"  # the preset is kept
