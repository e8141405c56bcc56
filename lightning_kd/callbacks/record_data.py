"""The data record in checkpoints: what inputs a trained network expects, readable without the data module."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_kd._record import DATA_RECORD_KEY, class_path


class RecordData(Callback):
    """Write the data's class count and normalization into every checkpoint (under ``DATA_RECORD_KEY``).

    The module's hyperparameters describe the model; this says what inputs it expects (``num_classes``, ``mean``,
    ``std`` and the data module's ``class_path``), so that ``lightning-kd export-student`` describes an exported
    student completely. The CLI adds it to every run; add it yourself to a ``Trainer`` built in Python.
    """

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        data = trainer.datamodule
        if data is None:
            return
        record: dict[str, Any] = {"class_path": class_path(type(data))}
        for key in ("num_classes", "mean", "std"):
            value = getattr(data, key, None)
            record[key] = list(value) if isinstance(value, tuple) else value
        checkpoint[DATA_RECORD_KEY] = record
