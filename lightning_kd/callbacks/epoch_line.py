"""One console line per training epoch, for logs that a progress bar would fill with carriage returns."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer

#: the metrics of a line of :class:`EpochLine`, in order, when logged (accuracies are shown in percent)
EPOCH_LINE_METRICS = ("train/loss_epoch", "val/loss", "val/acc1", "val/acc1_best")


class EpochLine(Callback):
    """Print one line per training epoch: its number, loss, validation top-1 and the time it took.

    A line for a log file, unlike a progress bar. Each line is printed once the epoch's metrics are all logged
    (when the next epoch starts, or when training ends). Only rank zero prints.
    """

    def __init__(self) -> None:
        self._pending: int | None = None
        self._started = 0.0
        self._seconds = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending = trainer.current_epoch
        self._seconds = time.perf_counter() - self._started

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            self._pending = None
            return
        print(epoch_line(self._pending, trainer.max_epochs, trainer.callback_metrics, self._seconds), flush=True)
        self._pending = None


def epoch_line(epoch: int, max_epochs: int | None, metrics: dict, seconds: float) -> str:
    """``epoch 3/12: train/loss_epoch 0.412, val/loss 0.103, val/acc1 97.50%, ... (4.1 s)`` (``epoch`` from 0)."""
    parts = []
    for name in EPOCH_LINE_METRICS:
        if name in metrics:
            value = float(metrics[name])
            parts.append(f"{name} {100 * value:.2f}%" if "acc" in name else f"{name} {value:.3f}")
    total = f"/{max_epochs}" if max_epochs is not None and max_epochs > 0 else ""
    return f"epoch {epoch + 1}{total}: {', '.join(parts) or 'no metrics logged'} ({seconds:.1f} s)"
