"""No host synchronisation in a training step.

On a CUDA device, training steps run under ``torch.cuda.set_sync_debug_mode("error")``: any ``.item()``,
``torch.unique``, device-to-host copy or value-dependent branch in the step raises. On the CPU, where there is
nothing to synchronise with, the training metrics must still skip torchmetrics' per-update input validation
(``validate_args=True`` runs ``torch.unique`` on every update: a sync on a GPU); that holds whether the module
uses a torchmetrics metric with ``validate_args=False`` or counts correct predictions itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torchmetrics.classification import MulticlassAccuracy

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.losses import KD
from tests.helpers.tiny import TinyNet, separable_loaders

VALIDATION = "_multiclass_stat_scores_tensor_validation"


def _trainer(tmp_path: Path, accelerator: str, steps: int, callbacks: list[Callback], precision: str = "32-true"):
    return Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="sync"),
        log_every_n_steps=50,  # no step values handed to the logger within the checked steps
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def _distillation(**options) -> DistillationModule:
    torch.manual_seed(0)
    loss = KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)
    return DistillationModule(TinyNet(4), TinyNet(4), loss, **options)


class _SyncErrors(Callback):
    """Turn CUDA sync debugging to "error" for batches ``start <= batch_idx < stop``, around each training step.

    The window is ``on_train_batch_start`` to ``on_train_batch_end``: the step, backward and optimizer step.
    The batch transfer happens before it, and the logger's step values after it. The step that closes a logging
    window (every ``log_every_n_steps`` steps, and the last step of an epoch or of ``max_steps``) reads the
    window's sums once, by design, to log them and check they are finite: ``stop`` leaves it out.
    """

    def __init__(self, start: int, stop: int) -> None:
        self.start = start
        self.stop = stop
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start <= batch_idx < self.stop:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.get_sync_debug_mode() != 0:
            torch.cuda.set_sync_debug_mode("default")
            self.checked += 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for sync debugging")
@pytest.mark.parametrize(
    ("options", "precision", "start"),
    [
        # batch 0 may check the targets' values once (a deliberate one-off sync)
        pytest.param({}, "32-true", 1, id="eager-fp32"),
        # 3 eager warm-up steps, then the capture (torch.cuda.graph synchronises once per capture)
        pytest.param({"cuda_graph": True}, "bf16-mixed", 5, id="cuda-graph-bf16"),
    ],
)
def test_training_steps_do_not_sync_on_cuda(tmp_path: Path, options: dict, precision: str, start: int) -> None:
    guard = _SyncErrors(start, stop=9)  # step 10 (batch 9) is the last: it closes the logging window
    train, _ = separable_loaders(n=160, batch_size=16)  # 10 steps
    try:
        _trainer(tmp_path, "gpu", 10, [guard], precision).fit(_distillation(**options), train)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guard.checked == 9 - start


def _raise_on_validation(*args, **kwargs):
    raise AssertionError("torchmetrics validated a metric's inputs during training")


@pytest.fixture
def no_input_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchmetrics' multiclass input validation raise, wherever a module imported it."""
    patched = 0
    for name, module in list(sys.modules.items()):
        if name.startswith("torchmetrics") and hasattr(module, VALIDATION):
            monkeypatch.setattr(module, VALIDATION, _raise_on_validation)
            patched += 1
    assert patched > 0, f"torchmetrics no longer has {VALIDATION}: update this test"
    # the patch is effective: a metric that validates its inputs now fails
    with pytest.raises(AssertionError, match="validated a metric's inputs"):
        MulticlassAccuracy(num_classes=4).update(torch.randn(8, 4), torch.randint(0, 4, (8,)))


@pytest.mark.usefixtures("no_input_validation")
@pytest.mark.parametrize(
    "build",
    [pytest.param(_distillation, id="distillation"), pytest.param(lambda: ClassificationModule(TinyNet(4)), id="cls")],
)
def test_training_metrics_skip_torchmetrics_input_validation(tmp_path: Path, build) -> None:
    module: LightningModule = build()
    train, _ = separable_loaders(n=64, batch_size=16)
    trainer = _trainer(tmp_path, "cpu", 4, [])
    trainer.fit(module, train)
    assert trainer.global_step == 4
    assert "train/acc1" in trainer.logged_metrics  # the accuracy was still computed (epoch value)
