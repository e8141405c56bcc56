"""A callback that crashes a fit in its second training batch (for tests of what a crashed run keeps)."""

from lightning.pytorch import Callback


class CrashAtSecondBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            raise ZeroDivisionError("crash for the test")
