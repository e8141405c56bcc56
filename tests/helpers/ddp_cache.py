"""A fit on 2 CPU processes (DDP, gloo) with or without a teacher cache; rank by rank, what each process saw.

Run by tests/test_teacher_cache.py: ``python ddp_cache.py OUT DATA_DIR TEACHER CACHE_OR_NONE TAG``. Each rank writes
``OUT/<TAG>_rank<R>.json`` with a hash of the student's final weights and whether its cache was memory-mapped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository root for `tests`

from lightning_kd import DistillationModule
from lightning_kd.data import CIFAR100DataModule
from lightning_kd.losses import KD
from tests.helpers.ddp_fit import state_hash


def main(out: Path, data_dir: str, teacher: str, cache: str, tag: str) -> None:
    seed_everything(0, workers=True)
    torch.manual_seed(0)
    module = DistillationModule(
        "resnet8",
        "resnet8",
        KD(temperature=2.0, kd_weight=9.0, standardize=True),
        num_classes=100,
        teacher_weights=teacher,
        lr_scheduler=None,
        teacher_cache=None if cache == "none" else cache,
    )
    data = CIFAR100DataModule(
        data_dir, batch_size=8, num_workers=0, verify_checksums=False, device_augment=True, view_keys=True
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    opened = getattr(module.teacher_component, "cache", None)
    report = {
        "student_sha256": state_hash(module.student),
        "memory_mapped": None if opened is None else opened.memory_mapped,
    }
    (out / f"{tag}_rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
