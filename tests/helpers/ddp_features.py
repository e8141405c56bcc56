"""A fit with a feature loss on 2 CPU processes (DDP, gloo); each rank writes hashes of the student and the adapters.

Run by tests/test_feature_api.py: ``python ddp_features.py OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository root for `tests`

from lightning_kd import DistillationModule
from lightning_kd.losses import KD, FitNet
from lightning_kd.models import create_model
from tests.helpers.ddp_fit import state_hash
from tests.helpers.tiny import separable_loaders


def main(out: Path) -> None:
    seed_everything(0, workers=True)
    torch.manual_seed(0)
    hint = FitNet(student_channels=32, teacher_channels=32, student_layers=2, teacher_layers=2)
    module = DistillationModule(
        create_model("resnet8", 4),
        create_model("resnet20", 4),
        KD(),
        feature_loss=hint,
        lr_scheduler=None,
        fold_teacher_bn=True,
    )
    train, _ = separable_loaders(n=32, num_classes=4, batch_size=8)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train)
    # parameters only: DDP keeps them equal across processes (BatchNorm statistics are each process's own)
    report = {
        "student": state_hash(dict(module.student.named_parameters())),
        "adapters": state_hash(dict(module.feature_loss.named_parameters())),
        "steps": trainer.global_step,
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
