"""The real ``lightning-kd fit`` with the DDP overlay on 2 CPU processes.

Runs ``python -m lightning_kd fit --config configs/demo/kd_ls.yaml --config configs/strategy/ddp.yaml
--trainer.devices 2`` as a subprocess (Lightning re-executes the command for the second rank), shrunk to a few
batches, in a temporary folder so the run folder and ``latest`` land there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from lightning_kd.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_fit_through_the_cli(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), teacher)
    command = [
        sys.executable,
        "-m",
        "lightning_kd",
        "fit",
        "--config",
        str(ROOT / "configs/demo/kd_ls.yaml"),
        "--config",
        str(ROOT / "configs/strategy/ddp.yaml"),
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.num_sanity_val_steps",
        "0",
        "--data.init_args.image_size",
        "16",
        "--model.init_args.teacher_weights",
        str(teacher),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the second rank re-executes `-m lightning_kd` from this cwd
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    group = tmp_path / "runs" / "demo" / "kd_ls"
    runs = sorted(p.name for p in group.iterdir() if p.name.startswith("version_"))
    assert runs == ["version_0"]  # one run folder: rank 1 made none of its own
    latest = group / "latest"
    assert latest.is_symlink() or latest.is_file()
    assert latest.resolve() == (group / "version_0").resolve()
    assert (group / "version_0" / "checkpoints" / "best.ckpt").is_file()
    assert not [p.name for p in group.iterdir() if p.name not in ("latest", "version_0")]  # no stray temporary link

    assert output.count("fit finished:") == 1, output[-6000:]
    assert "sync_dist" not in output
