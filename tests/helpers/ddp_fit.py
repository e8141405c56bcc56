"""Run a short 2-process distillation ``fit`` on the digits and record what every rank saw.

Launched as a script by ``tests/test_distributed.py``: Lightning's ``ddp`` strategy re-executes this file once
per extra rank (a pytest process cannot be re-executed that way). Each rank writes ``rank<k>.json`` with the
hashes of its teacher and student weights and the validation metrics it holds after every epoch.

Usage: ``python tests/helpers/ddp_fit.py OUT_DIR TEACHER_WEIGHTS VAL_FRACTION [STRATEGY]``
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_kd import DistillationModule
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD

BATCH_SIZE = 32
VAL_BATCH_SIZE = 64
IMAGE_SIZE = 16


def state_hash(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of a state dict (names, dtypes and raw bytes), in key order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankRecorder(Callback):
    """Write, on every rank, the metrics it holds after each validation epoch and the final weight hashes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        # after the module's epoch-end hook: the values that were logged (metric objects are synced across ranks)
        keys = ("val/acc1", "teacher/val_acc1", "val/acc1_best")
        self.epochs.append({k: float(trainer.callback_metrics[k]) for k in keys if k in trainer.callback_metrics})

    def on_fit_end(self, trainer, pl_module) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "teacher_sha": state_hash(pl_module.teacher),
            "student_sha": state_hash(pl_module.student),
            "teacher_requires_grad": any(p.requires_grad for p in pl_module.teacher.parameters()),
            "teacher_training": any(m.training for m in pl_module.teacher.modules()),
            "epochs": self.epochs,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        if trainer.global_rank == 0:
            torch.save(pl_module.student.state_dict(), self.out / "student_final.pt")


def main(out: Path, teacher_weights: str, val_fraction: float, strategy: str = "ddp") -> None:
    seed_everything(0, workers=True)
    data = DigitsDataModule(
        batch_size=BATCH_SIZE, val_batch_size=VAL_BATCH_SIZE, image_size=IMAGE_SIZE, val_fraction=val_fraction
    )
    module = DistillationModule(
        "resnet8",
        "resnet8",
        KD(temperature=4.0, ce_weight=1.0, kd_weight=0.1),
        num_classes=10,
        teacher_weights=teacher_weights,
        lr_scheduler=None,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=2,
        limit_train_batches=10,
        log_every_n_steps=1,
        logger=CSVLogger(out, name="logs", version=0),
        callbacks=[RankRecorder(out), ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), *sys.argv[4:5])
