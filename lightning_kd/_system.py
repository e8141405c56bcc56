"""Shared machinery of the two LightningModules: metrics, evaluation steps and optimizer wiring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_kd.models import create_model
from lightning_kd.models.checkpoint import load_weights
from lightning_kd.models.external import TIMM_PREFIX, TORCHVISION_PREFIX

Batch = tuple[Any, Tensor]


def infer_num_classes(model: nn.Module) -> int | None:
    """The number of classes a classifier predicts, read without running it.

    Uses the ``num_classes`` attribute (this project's models and timm's), else the output size of the last
    ``nn.Linear`` (torchvision's classifiers). Returns ``None`` when neither exists.
    """
    value = getattr(model, "num_classes", None)
    if isinstance(value, int):
        return value
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def build_network(spec: nn.Module | str, num_classes: int | None, weights: str | None, role: str) -> nn.Module:
    """Build the model ``spec`` names with :func:`~lightning_kd.models.create_model`, or take the given module.

    ``weights`` (a checkpoint path, or for a name also a library weights spec) are loaded strictly either way.
    """
    if isinstance(spec, nn.Module):
        if weights is not None:
            if weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
                raise ValueError(
                    f"{role} weights {weights!r} name library weights, which apply to a {role} given by name "
                    f"(e.g. 'torchvision/resnet34'); for a module pass a checkpoint path."
                )
            load_weights(spec, weights)
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{role} must be an nn.Module or a model name, got {type(spec).__name__}.")
    if num_classes is None:
        raise ValueError(
            f"Cannot build {role} {spec!r} without num_classes: pass num_classes=..., or give a data module "
            "through the CLI (data.num_classes is linked to the model)."
        )
    return create_model(spec, num_classes=num_classes, weights=weights)


def describe_network(spec: nn.Module | str) -> str:
    """A primitive description of a network for hyperparameters: its model name or its class path."""
    if isinstance(spec, str):
        return spec
    return f"{type(spec).__module__}.{type(spec).__qualname__}"


def instantiated_by_cli() -> bool:
    """Whether LightningCLI is instantiating this module right now.

    Then ``save_hyperparameters`` records the parsed config (``class_path`` dicts of primitives), which
    ``load_from_checkpoint`` needs whole to rebuild injected objects; outside the CLI, object arguments must be
    left out instead (they are not primitives).
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # a Lightning without the mechanism: nothing is given
        return False
    return _given_hyperparameters.get() is not None


def _accuracy(num_classes: int, top_k: int) -> MulticlassAccuracy:
    # micro average = the usual "fraction of samples whose label is in the top-k" (torchmetrics defaults to macro)
    return MulticlassAccuracy(num_classes=num_classes, top_k=min(top_k, num_classes), average="micro")


def apply_views(net: nn.Module, inputs: Tensor | tuple[Tensor, ...] | list[Tensor]) -> Tensor | tuple[Tensor, ...]:
    """Run ``net`` on a batch, or on each view of a multi-view batch (MLKD's ``(weak, strong)``)."""
    if isinstance(inputs, (tuple, list)):
        return tuple(net(view) for view in inputs)
    return net(inputs)


def first_view(logits: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The logits of the first (weak / un-augmented) view, used for accuracy."""
    return logits[0] if isinstance(logits, tuple) else logits


class ClassifierSystem(LightningModule):
    """Base of :class:`ClassificationModule` and :class:`DistillationModule`.

    Holds the torchmetrics accuracies (top-1/top-5, logged as fractions), the best-so-far validation top-1,
    the evaluation steps, and the injected optimizer / scheduler factories. Subclasses define
    :attr:`network` (the model being trained) and :meth:`trainable_parameters`.
    """

    def __init__(self, num_classes: int, optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.train_acc1 = _accuracy(num_classes, 1)
        self.val_acc1 = _accuracy(num_classes, 1)
        self.val_acc5 = _accuracy(num_classes, 5)
        self.test_acc1 = _accuracy(num_classes, 1)
        self.test_acc5 = _accuracy(num_classes, 5)
        self.val_acc1_best = MaxMetric()

    @property
    def network(self) -> nn.Module:
        """The network that is trained and evaluated."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters handed to the optimizer."""
        raise NotImplementedError

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Logits of the trained network (inference only)."""
        return self.network(x)

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.num_classes:
            raise ValueError(
                f"The data module has num_classes={data_classes} but the model was built with "
                f"num_classes={self.num_classes}: build the models for {data_classes} classes."
            )

    @override
    def on_train_start(self) -> None:
        # the sanity check may have updated the best-so-far tracker; start from a clean state
        self.val_acc1_best.reset()

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = first_view(apply_views(self.network, inputs))
        self.val_acc1.update(logits, targets)
        self.val_acc5.update(logits, targets)
        n = targets.shape[0]
        self.log("val/loss", F.cross_entropy(logits.float(), targets), on_epoch=True, batch_size=n, sync_dist=True)
        self.log("val/acc1", self.val_acc1, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val/acc5", self.val_acc5, on_epoch=True, batch_size=n)

    @override
    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc1_best.update(self.val_acc1.compute())
        self.log("val/acc1_best", self.val_acc1_best.compute(), prog_bar=True)

    @override
    def test_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = first_view(apply_views(self.network, inputs))
        self.test_acc1.update(logits, targets)
        self.test_acc5.update(logits, targets)
        n = targets.shape[0]
        self.log("test/loss", F.cross_entropy(logits.float(), targets), on_epoch=True, batch_size=n, sync_dist=True)
        self.log("test/acc1", self.test_acc1, on_epoch=True, batch_size=n)
        self.log("test/acc5", self.test_acc5, on_epoch=True, batch_size=n)

    @override
    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return first_view(apply_views(self.network, inputs))

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(list(self.trainable_parameters()))
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _log_train_metrics(self, loss: Tensor, logits: Tensor, targets: Tensor, terms: dict[str, Tensor]) -> None:
        n = targets.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n)
        self.train_acc1(logits.detach(), targets)
        self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True, batch_size=n)


def sum_terms(terms: dict[str, Tensor]) -> Tensor:
    """The training loss: the sum of the already-weighted loss terms."""
    return torch.stack(list(terms.values())).sum()
