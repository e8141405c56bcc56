"""The two LightningModules: :class:`DistillationModule` (teacher -> student) and :class:`ClassificationModule`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_kd._system import (
    Batch,
    ClassifierSystem,
    apply_views,
    build_network,
    describe_network,
    first_view,
    infer_num_classes,
    instantiated_by_cli,
    sum_terms,
)
from lightning_kd.losses.base import DistillationLoss
from lightning_kd.optim import cifar_multistep, cifar_sgd

_TEACHER_PREFIX = "teacher."


def _resolve_num_classes(num_classes: int | None, **specs: nn.Module | str) -> int | None:
    """``num_classes`` if given, else what the given modules predict; modules that disagree are an error."""
    inferred = {role: infer_num_classes(spec) for role, spec in specs.items() if isinstance(spec, nn.Module)}
    known = {role: n for role, n in inferred.items() if n is not None}
    if num_classes is not None:
        for role, n in known.items():
            if n != num_classes:
                raise ValueError(
                    f"The {role} predicts {n} classes but num_classes={num_classes}: build it for {num_classes} "
                    "classes or pass the matching num_classes."
                )
        return num_classes
    if len(set(known.values())) > 1:
        raise ValueError(f"The networks predict different numbers of classes: {known}. They must agree.")
    return next(iter(known.values()), None)


class DistillationModule(ClassifierSystem):
    r"""Distil a frozen teacher into a trainable student with a pluggable :class:`DistillationLoss`.

    The teacher is frozen (``requires_grad=False``), kept in eval mode through ``fit`` / ``validate`` (also
    when Lightning or user code calls ``.train()`` on this module), run under :func:`torch.no_grad`, left
    out of the optimizer and, unless ``save_teacher=True``, out of saved checkpoints. Such a checkpoint
    reloads into a module that has its teacher (from ``teacher_weights`` or the given module); any other
    missing or unexpected key is still an error.

    Logged: ``train/loss`` and every loss term as ``train/<term>``, ``train/acc1``, ``val/loss`` (cross-entropy
    of the student), ``val/acc1``, ``val/acc5``, ``val/acc1_best``, ``test/*``, and the teacher's
    ``teacher/val_acc1`` once, at the first validation epoch. Accuracies are fractions in [0, 1].

    Args:
        student: the network to train: an ``nn.Module`` or a model name understood by
            :func:`~lightning_kd.models.create_model` (``"resnet8x4"``, ``"torchvision/resnet18"``, ``"timm/..."``).
        teacher: the frozen network to distil from, given the same ways.
        loss: the distillation objective, e.g. ``KD(temperature=2, kd_weight=9, standardize=True)``.
        num_classes: number of classes. Optional: inferred from module networks; required when both networks
            are given by name (the CLI links it from ``data.num_classes``).
        optimizer: factory called with the trainable parameters (student and loss parameters only).
            Default: SGD lr 0.05, momentum 0.9, weight decay 5e-4.
        lr_scheduler: factory called with the optimizer, stepped every epoch; ``None`` for a constant rate.
            Default: MultiStepLR at epochs 150, 180, 210, gamma 0.1.
        teacher_weights: the teacher's trained weights: a checkpoint path (reference ``{"model": ...}``
            format, plain state dict, or a Lightning checkpoint of this project), or a library weights spec
            (``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``) for a teacher given by name.
        student_weights: optional initial weights of the student, same formats.
        save_teacher: keep the teacher's weights in saved checkpoints (off: checkpoints hold the student only).

    Example::

        >>> from lightning_kd import DistillationModule
        >>> from lightning_kd.losses import KD
        >>> module = DistillationModule("resnet8", "resnet20", KD(temperature=2.0, kd_weight=9.0, standardize=True),
        ...                             num_classes=10)  # teacher_weights="teacher.ckpt" in real use
        >>> sorted(name for name, _ in module.named_children())[:2]
        ['loss', 'student']
    """

    def __init__(
        self,
        student: str | nn.Module,
        teacher: str | nn.Module,
        loss: DistillationLoss,
        *,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = cifar_sgd,
        lr_scheduler: LRSchedulerCallable | None = cifar_multistep,
        teacher_weights: str | None = None,
        student_weights: str | None = None,
        save_teacher: bool = False,
    ) -> None:
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"loss must be a DistillationLoss (e.g. lightning_kd.losses.KD), got {type(loss).__name__}")
        resolved = _resolve_num_classes(num_classes, student=student, teacher=teacher)
        if resolved is None:
            raise ValueError(
                "num_classes is required when neither network tells it (both given by name, or modules without a "
                "`num_classes` attribute or final nn.Linear): pass num_classes=..."
            )
        super().__init__(resolved, optimizer, lr_scheduler)
        self.student = build_network(student, resolved, student_weights, "student")
        self.teacher = build_network(teacher, resolved, teacher_weights, "teacher")
        if isinstance(teacher, str) and teacher_weights is None:
            rank_zero_warn(
                f"The teacher {teacher!r} is built with random weights (no teacher_weights given). Distilling from "
                "it only makes sense when a checkpoint with the teacher's weights is loaded next.",
                category=PossibleUserWarning,
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.loss = loss
        self.save_teacher = save_teacher
        self.teacher_val_acc1 = MulticlassAccuracy(num_classes=resolved, average="micro")
        self._teacher_acc_logged = False
        self._eval_warning_filter: tuple[Any, ...] | None = None

        # Hyperparameters hold primitives only, so checkpoints reload with torch.load(weights_only=True).
        if instantiated_by_cli():
            # the CLI records its parsed config (class_path / init_args dicts of primitives); every key must stay
            # an init argument, since `--ckpt_path` parses them back into the model's config
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=["student", "teacher", "loss", "optimizer", "lr_scheduler"])
            extra: dict[str, Any] = {f"loss.{k}": v for k, v in loss.hparams_dict().items()}
            extra["num_classes"] = resolved
            for role, spec in (("student", student), ("teacher", teacher)):
                extra[role if isinstance(spec, str) else f"{role}_class"] = describe_network(spec)
            self.hparams.update(extra)

    @property
    @override
    def network(self) -> nn.Module:
        return self.student

    @override
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        # the student's and any loss-owned parameters (CTKD's temperature), never the teacher's
        yield from self.student.parameters()
        yield from self.loss.parameters()

    @override
    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        # the teacher's BatchNorm statistics and dropout must never switch to training behaviour
        self.teacher.eval()
        return self

    @override
    def on_fit_start(self) -> None:
        # Lightning >= 2.5.5 warns about modules in eval mode at fit start; the frozen teacher is in eval mode
        # by design. Silence exactly that count, so a student module left in eval mode still warns.
        n_teacher = sum(1 for _ in self.teacher.modules())
        n_eval = sum(1 for m in self.modules() if not m.training)
        if n_eval == n_teacher:
            pattern = re.escape(f"Found {n_teacher} module(s) in eval mode at the start of training.")
            warnings.filterwarnings("ignore", message=pattern, category=PossibleUserWarning)
            self._eval_warning_filter = warnings.filters[0]

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        if self._eval_warning_filter is not None and self._eval_warning_filter in warnings.filters:
            warnings.filters.remove(self._eval_warning_filter)
        self._eval_warning_filter = None

    @override
    def on_train_epoch_start(self) -> None:
        # Lightning >= 2.2 no longer calls .train() at fit start: a student loaded in eval mode would train
        # with frozen BatchNorm statistics.
        self.student.train()
        self.teacher.eval()

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, targets = batch
        with torch.no_grad():  # not inference_mode: the loss saves teacher probabilities for backward
            teacher_logits = apply_views(self.teacher, inputs)
        student_logits = apply_views(self.student, inputs)
        # loss math in fp32 even under mixed precision (the loss also upcasts its inputs)
        with torch.autocast(device_type=self.device.type, enabled=False):
            terms = self.loss(student_logits, teacher_logits, targets, epoch=self.current_epoch + 1)
        loss = sum_terms(terms)
        self._log_train_metrics(loss, first_view(student_logits), targets, terms)
        return loss

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self._teacher_acc_logged or self.trainer.sanity_checking:
            return
        inputs, targets = batch
        with torch.no_grad():
            teacher_logits = first_view(apply_views(self.teacher, inputs))
        self.teacher_val_acc1.update(teacher_logits, targets)

    @override
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._teacher_acc_logged or self.trainer.sanity_checking:
            return
        # self.log is not allowed in on_fit_start: log the teacher once, at the first real validation epoch
        self.log("teacher/val_acc1", self.teacher_val_acc1.compute())
        self.teacher_val_acc1.reset()
        self._teacher_acc_logged = True

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.save_teacher:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(_TEACHER_PREFIX)]:
                del state[key]

    @override
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict; a checkpoint saved without the teacher keeps the teacher this module already has.

        Raises:
            RuntimeError: with ``strict=True``, naming every missing (non-teacher) and unexpected key.
        """
        has_teacher = any(k.startswith(_TEACHER_PREFIX) for k in state_dict)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if has_teacher or not k.startswith(_TEACHER_PREFIX)]
        unexpected = list(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"Error loading the state dict into {type(self).__name__}: missing keys {missing}, unexpected keys "
                f"{unexpected}. The checkpoint was saved from a different student/loss configuration."
            )
        return _IncompatibleKeys(missing, unexpected)


class ClassificationModule(ClassifierSystem):
    """Plain supervised training of one classifier (teachers and student baselines).

    Same metrics, optimizer defaults and logging names as :class:`DistillationModule` (``train/loss``,
    ``train/ce``, ``val/acc1``, ``val/acc1_best``, ...). Its checkpoints load as ``teacher_weights``.

    Args:
        model: the network: an ``nn.Module`` or a model name understood by :func:`~lightning_kd.models.create_model`.
        num_classes: number of classes; optional for a module network (inferred), required for a name (the CLI
            links it from ``data.num_classes``).
        optimizer: factory called with the model's parameters. Default: SGD lr 0.05, momentum 0.9, wd 5e-4.
        lr_scheduler: factory called with the optimizer, stepped every epoch; ``None`` for a constant rate.
            Default: MultiStepLR at epochs 150, 180, 210, gamma 0.1.
        weights: optional initial weights (checkpoint path or library weights spec), as for ``create_model``.
    """

    def __init__(
        self,
        model: str | nn.Module,
        *,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = cifar_sgd,
        lr_scheduler: LRSchedulerCallable | None = cifar_multistep,
        weights: str | None = None,
    ) -> None:
        resolved = _resolve_num_classes(num_classes, model=model)
        if resolved is None:
            raise ValueError("num_classes is required for this model (it has no `num_classes` or final nn.Linear).")
        super().__init__(resolved, optimizer, lr_scheduler)
        self.model = build_network(model, resolved, weights, "model")
        if instantiated_by_cli():  # see DistillationModule
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"])
            key = "model" if isinstance(model, str) else "model_class"
            self.hparams.update({"num_classes": resolved, key: describe_network(model)})

    @property
    @override
    def network(self) -> nn.Module:
        return self.model

    @override
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    @override
    def on_train_epoch_start(self) -> None:
        self.model.train()

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        inputs, targets = batch
        logits = first_view(apply_views(self.model, inputs))
        loss = F.cross_entropy(logits.float(), targets)
        self._log_train_metrics(loss, logits, targets, {"ce": loss})
        return loss
