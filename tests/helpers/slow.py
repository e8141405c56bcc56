"""A callback that slows each training batch down, so a test can signal a run in the middle of an epoch."""

from __future__ import annotations

import time

from lightning.pytorch import Callback


class SlowBatches(Callback):
    """Sleep ``seconds`` after every training batch."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
