"""Two-process evaluation on the digits: what every rank logs in ``fit``, ``validate`` and ``test``.

Launched as a script by ``tests/test_ddp_evaluation.py`` (Lightning's ``ddp`` strategy re-executes this file for
the second rank). Each rank writes ``eval_rank<k>.json``: the epoch-level metrics it holds after fit's validation
epoch, after ``validate`` and after ``test``. Rank 0 saves the student it validated in fit as ``student_fit.pt``.

``validate`` and ``test`` run on a fresh module whose student is loaded from ``STUDENT_WEIGHTS`` on every rank
(outside ``fit`` DDP does not wrap the module, so nothing would copy rank 0's BatchNorm buffers to the others).

Usage: ``python tests/helpers/ddp_eval.py OUT_DIR TEACHER_WEIGHTS STUDENT_WEIGHTS VAL_FRACTION``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.callbacks import LogitStatistics
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD

BATCH_SIZE = 32
VAL_BATCH_SIZE = 48
IMAGE_SIZE = 16


def make_data(val_fraction: float) -> DigitsDataModule:
    return DigitsDataModule(
        batch_size=BATCH_SIZE, val_batch_size=VAL_BATCH_SIZE, image_size=IMAGE_SIZE, val_fraction=val_fraction
    )


def make_module(teacher_weights: str, student_weights: str | None = None) -> DistillationModule:
    # LS with a base temperature: LogitStatistics logs every one of its values (temperatures included)
    loss = KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)
    return DistillationModule(
        "resnet8",
        "resnet8",
        loss,
        num_classes=10,
        teacher_weights=teacher_weights,
        student_weights=student_weights,
        lr_scheduler=None,
    )


def make_trainer(devices: int, strategy: str, callbacks: list[Callback]) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_epochs=1,
        limit_train_batches=4,
        log_every_n_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def epoch_metrics(trainer: Trainer) -> dict[str, float]:
    """The epoch-level values the trainer holds (what callbacks and loggers saw)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}


class FitRecorder(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.metrics: dict[str, float] = {}

    def on_fit_end(self, trainer, pl_module) -> None:
        # after the epoch's validation and its training-epoch end (which comes after validation)
        self.metrics = epoch_metrics(trainer)
        if trainer.global_rank == 0:
            torch.save(pl_module.student.state_dict(), self.out / "student_fit.pt")


def main(out: Path, teacher_weights: str, student_weights: str, val_fraction: float) -> None:
    seed_everything(0, workers=True)
    recorder = FitRecorder(out)
    trainer = make_trainer(2, "ddp", [LogitStatistics(histogram_samples=0), recorder])
    trainer.fit(make_module(teacher_weights), make_data(val_fraction))
    record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "fit": recorder.metrics}

    module = make_module(teacher_weights, student_weights)
    trainer.validate(module, make_data(val_fraction), verbose=False)
    record["validate"] = epoch_metrics(trainer)
    trainer.test(module, make_data(val_fraction), verbose=False)
    record["test"] = epoch_metrics(trainer)
    (out / f"eval_rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]))
