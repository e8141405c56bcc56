"""Write a finished fit's headline numbers to a JSON file, for scripts that run many fits (sweeps)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class FitResult(Callback):
    """At the end of ``fit``, write the best and last validation top-1 and where the run is to ``path`` (JSON).

    The file holds ``best_val_acc1`` and ``last_val_acc1`` (fractions in [0, 1], from the module's
    ``val/acc1_best`` and ``val/acc1``; ``null`` when not logged), ``epochs`` (epochs trained), ``run_folder``
    (``trainer.log_dir``) and ``best_checkpoint`` (the checkpoint callback's best path, or ``null``). Only the
    global-zero process writes. :mod:`lightning_kd.apps.sweep` adds it to each grid point's fit to collect its table.

    Args:
        path: the JSON file to write (its folder is created).

    Example::

        lightning-kd fit --config configs/demo/kd_ls.yaml \\
            --trainer.callbacks+=lightning_kd.callbacks.FitResult --trainer.callbacks.path=result.json
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics

        def value(key: str) -> float | None:
            return float(metrics[key]) if key in metrics else None

        checkpoint = trainer.checkpoint_callback
        result = {
            "best_val_acc1": value("val/acc1_best"),
            "last_val_acc1": value("val/acc1"),
            "epochs": trainer.current_epoch,
            "run_folder": trainer.log_dir,
            "best_checkpoint": (getattr(checkpoint, "best_model_path", "") or None) if checkpoint else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(result, indent=2) + "\n")
