"""``validate`` of a two-teacher DistillationModule on 2 CPU processes (gloo); rank 0 writes the logged metrics.

Run by tests/test_multi_teacher.py: ``python ddp_ensemble.py OUT TEACHER_A TEACHER_B DEVICES``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD


def make_module(teacher_a: str, teacher_b: str) -> DistillationModule:
    return DistillationModule(
        "resnet8",
        ["resnet8", "resnet8"],
        KD(temperature=4.0),
        num_classes=10,
        teacher_weights=[teacher_a, teacher_b],
        lr_scheduler=None,
    )


def main(out: Path, teacher_a: str, teacher_b: str, devices: int) -> None:
    seed_everything(0, workers=True)
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # 361 validation samples: an odd split, so the ranks see different numbers of samples
    data = DigitsDataModule(batch_size=32, val_batch_size=40, image_size=8, val_fraction=0.2005)
    trainer.validate(make_module(teacher_a, teacher_b), data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("teacher/")}
    if trainer.global_rank == 0:
        (out / f"teacher_metrics_{devices}.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
