"""The two LightningModules: :class:`DistillationModule` (teacher -> student) and :class:`ClassificationModule`."""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_kd._record import absolute_weights_path, describe_factory, describe_network
from lightning_kd._system import (
    Batch,
    ClassifierSystem,
    apply_views,
    build_network,
    first_view,
    infer_num_classes,
    log_global,
)
from lightning_kd.losses.base import DistillationLoss
from lightning_kd.models.external import TIMM_PREFIX, TORCHVISION_PREFIX
from lightning_kd.models.fold import fold_batchnorm, hooked_modules
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


def _weights_file_missing(weights: str | None) -> bool:
    """``weights`` names a checkpoint file (not a library spec) that does not exist."""
    return (
        weights is not None
        and not weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))
        and not Path(weights).expanduser().is_file()
    )


class DistillationModule(ClassifierSystem):
    r"""Distil a frozen teacher into a trainable student with a pluggable :class:`DistillationLoss`.

    The teacher is frozen (``requires_grad=False``), kept in eval mode through ``fit`` / ``validate`` (also
    when Lightning or user code calls ``.train()`` on this module), run under :func:`torch.no_grad`, left
    out of every optimizer and, unless ``save_teacher=True``, out of saved checkpoints. Such a checkpoint
    reloads into a module that has its teacher (from ``teacher_weights`` or the given module); any other
    missing or unexpected key is still an error.

    A ``teacher_weights`` file that does not exist does not stop the module from being built (a notice says so):
    ``fit`` refuses to start, while ``validate`` / ``test`` / ``predict`` evaluate the student alone and skip the
    ``teacher/*`` metrics. Evaluating a student needs no teacher.

    Logged: ``train/loss_step`` / ``train/loss_epoch`` and every loss term as ``train/<term>_step`` /
    ``train/<term>_epoch`` (step values are the mean over the last ``log_every_n_steps`` steps), ``train/acc1``,
    ``val/loss`` (cross-entropy of the student), ``val/acc1``, ``val/acc5``, ``val/acc1_best``, ``test/*``, and the
    teacher's ``teacher/val_acc1`` once, at the first validation epoch. Accuracies are fractions in [0, 1].

    Extending: override :meth:`compute_loss_terms` to add terms computed from the student's and teacher's logits;
    each added term is summed into the loss and logged like the others.

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
            (``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``) for a teacher given by name. Recorded as an
            absolute path.
        student_weights: optional initial weights of the student, same formats.
        save_teacher: keep the teacher's weights in saved checkpoints (off: checkpoints hold the student only).
        cuda_graph: on a CUDA device, run each training step as one replay of a captured CUDA graph (teacher and
            student forward, backward, loss, optimizer update); eager elsewhere, with a notice. Not with fp16
            mixed precision (use bf16-mixed), gradient accumulation or gradient clipping.
        channels_last: keep both networks and 4-D inputs in NHWC memory format (faster convolutions on GPUs).
        fold_teacher_bn: run the teacher as a copy with each convolution -> BatchNorm pair folded into one
            convolution (:func:`~lightning_kd.models.fold.fold_batchnorm`): the same logits up to float32 rounding
            (about 1e-7 relative) in fewer kernels, which matters where a step is bound by per-kernel costs (CIFAR
            sizes on a GPU). The copy is built from the teacher's current weights when ``fit`` / ``validate`` /
            ``test`` / ``predict`` starts, on the teacher's device; it is never saved (checkpoints and
            ``state_dict`` keep the teacher as it is). Needs a teacher that ``torch.fx`` can trace. Under FSDP (a
            sharded teacher) it has no effect, with a warning.

    Example::

        >>> from lightning_kd import DistillationModule
        >>> from lightning_kd.losses import KD
        >>> module = DistillationModule("resnet8", "resnet20", KD(temperature=2.0, kd_weight=9.0, standardize=True),
        ...                             num_classes=10)  # teacher_weights="teacher.ckpt" in real use
        >>> sorted(name for name, _ in module.named_children())[:2]
        ['loss', 'student']
        >>> module.hparams["loss.kd_weight"], module.hparams["student"]
        (9.0, 'resnet8')
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
        cuda_graph: bool = False,
        channels_last: bool = False,
        fold_teacher_bn: bool = False,
    ) -> None:
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"loss must be a DistillationLoss (e.g. lightning_kd.losses.KD), got {type(loss).__name__}")
        resolved = _resolve_num_classes(num_classes, student=student, teacher=teacher)
        if resolved is None:
            raise ValueError(
                "num_classes is required when neither network tells it (both given by name, or modules without a "
                "`num_classes` attribute or final nn.Linear): pass num_classes=..."
            )
        super().__init__(resolved, optimizer, lr_scheduler, cuda_graph, channels_last)
        teacher_weights = absolute_weights_path(teacher_weights)
        student_weights = absolute_weights_path(student_weights)
        self.student = build_network(student, resolved, student_weights, "student")
        self.teacher_available = not _weights_file_missing(teacher_weights)
        self.teacher = build_network(teacher, resolved, teacher_weights if self.teacher_available else None, "teacher")
        if not self.teacher_available:
            rank_zero_warn(
                f"teacher_weights {teacher_weights!r} does not exist: the teacher has no trained weights. `fit` will "
                "refuse to start; validate/test/predict evaluate the student alone and skip the teacher/* metrics. "
                "To distil, pass the teacher checkpoint's path (--model.init_args.teacher_weights PATH).",
                category=PossibleUserWarning,
            )
        elif isinstance(teacher, str) and teacher_weights is None:
            rank_zero_warn(
                f"The teacher {teacher!r} is built with random weights (no teacher_weights given). Distilling from "
                "it only makes sense when a checkpoint with the teacher's weights is loaded next.",
                category=PossibleUserWarning,
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.loss = loss
        self.save_teacher = save_teacher
        #: compute the teacher's logits in every validation step (a callback such as LogitStatistics sets it);
        #: otherwise only at the first validation epoch, for ``teacher/val_acc1``
        self.teacher_in_validation = False
        self.teacher_val_acc1 = MulticlassAccuracy(num_classes=resolved, average="micro")
        self._teacher_acc_logged = False
        self._eval_warning_filter: tuple[Any, ...] | None = None
        self.fold_teacher_bn = bool(fold_teacher_bn)
        # a plain attribute (a tuple, so nn.Module does not register it): the copy never enters state_dict
        self._folded_teacher: tuple[nn.Module] | None = None
        # the teacher's hooked modules when the copy was made: the copy carries (and fires) exactly their hooks
        self._folded_hooks: frozenset[str] = frozenset()
        self._save_record(
            {
                **describe_network("student", student),
                **describe_network("teacher", teacher),
                "num_classes": resolved,
                "teacher_weights": teacher_weights,
                "student_weights": student_weights,
                "save_teacher": save_teacher,
                "cuda_graph": self.cuda_graph,
                "channels_last": self.channels_last,
                "fold_teacher_bn": self.fold_teacher_bn,
                **{f"loss.{k}": v for k, v in loss.hparams_dict().items()},
                **describe_factory("optimizer", optimizer),
                **describe_factory("lr_scheduler", lr_scheduler),
            },
            DistillationModule.__init__,
            inspect.currentframe(),
        )

    @classmethod
    @override
    def record_objects(cls) -> tuple[str, ...]:
        return ("student", "teacher")

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
    def frozen_parameters(self) -> Iterator[nn.Parameter]:
        return self.teacher.parameters()

    @override
    def networks(self) -> list[nn.Module]:
        return [self.student, self.teacher]

    @override
    def epoch_dependent_step(self) -> bool:
        # a subclass that extends compute_loss_terms may read the epoch: re-capture to be safe
        overridden = type(self).compute_loss_terms is not DistillationModule.compute_loss_terms
        return self.loss.epoch_dependent or overridden

    @override
    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        # the teacher's BatchNorm statistics and dropout must never switch to training behaviour
        self.teacher.eval()
        return self

    @override
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and not self.teacher_available:
            raise FileNotFoundError(
                f"teacher_weights {self.hparams.get('teacher_weights')!r} does not exist, and distillation needs the "
                "teacher's trained weights: pass the path of the teacher checkpoint "
                "(--model.init_args.teacher_weights PATH, or teacher_weights=... in Python)."
            )
        datamodule = getattr(self.trainer, "datamodule", None)
        data_views = 2 if getattr(datamodule, "two_views", False) else 1
        if stage == "fit" and datamodule is not None and data_views != self.loss.num_views:
            hint = "true" if self.loss.num_views == 2 else "false"
            raise ValueError(
                f"{type(self.loss).__name__} takes {self.loss.num_views} view(s) of each training image but the data "
                f"module gives {data_views}: set two_views: {hint} on the data module "
                f"(--data.init_args.two_views {hint})."
            )

    @override
    def on_fit_start(self) -> None:
        super().on_fit_start()
        # Lightning >= 2.5.5 warns about modules in eval mode at fit start; the frozen teacher is in eval mode
        # by design. Silence exactly that count, so a student module left in eval mode still warns.
        n_teacher = sum(1 for _ in self.teacher.modules())
        n_eval = sum(1 for m in self.modules() if not m.training)
        if n_eval == n_teacher:
            pattern = re.escape(f"Found {n_teacher} module(s) in eval mode at the start of training.")
            warnings.filterwarnings("ignore", message=pattern, category=PossibleUserWarning)
            self._eval_warning_filter = warnings.filters[0]

    @override
    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.trainer.state.fn != TrainerFn.FITTING:  # within fit, the copy made at on_train_start stays valid
            self._refresh_folded_teacher()
        else:
            self._refold_if_hooks_changed()

    @override
    def on_test_start(self) -> None:
        super().on_test_start()
        self._refresh_folded_teacher()

    @override
    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._refresh_folded_teacher()

    def _refresh_folded_teacher(self) -> None:
        """(Re)build the folded teacher from the teacher's current weights, on its device, when the option is on."""
        if not self.fold_teacher_bn or not self.teacher_available:
            return
        strategy = self.trainer.strategy
        if isinstance(strategy, FSDPStrategy) or any(p.numel() == 0 for p in self.teacher.parameters()):
            # a speed option only (the logits are the same): under sharding it does nothing, and says so, as
            # cuda_graph does off CUDA
            self._folded_teacher = (self.teacher,)
            rank_zero_warn(
                f"fold_teacher_bn=True has no effect under {type(strategy).__name__}: the teacher's weights are "
                "sharded across processes and cannot be folded into one copy, so the teacher runs as it is. Set "
                "fold_teacher_bn to false (--model.init_args.fold_teacher_bn false) to silence this."
            )
            return
        self._fold_teacher()
        if self._graph is not None:
            self._graph.invalidate()  # a captured step reads the previous copy's weights

    def _fold_teacher(self) -> None:
        self._folded_hooks = hooked_modules(self.teacher)
        self._folded_teacher = (fold_batchnorm(self.teacher),)

    def _refold_if_hooks_changed(self) -> None:
        """A hook put on another teacher module since the copy was made (or all hooks taken off one): copy again.

        Hooks added to or removed from a module that was hooked already need nothing: the copy shares its hooks.
        """
        folded = self._folded_teacher
        if folded is not None and folded[0] is not self.teacher and hooked_modules(self.teacher) != self._folded_hooks:
            self._refresh_folded_teacher()

    def teacher_network(self) -> nn.Module:
        """The network that computes the teacher's logits: the folded copy with ``fold_teacher_bn``, else the teacher.

        Under FSDP, where the teacher is sharded, the teacher itself even with ``fold_teacher_bn``.

        Outside a Trainer the folded copy is built on first use.

        Hooks on the teacher's modules fire on the folded copy too: the copy keeps each module that has a hook when
        it is made, sharing its hooks (see :func:`~lightning_kd.models.fold.fold_batchnorm`); the copy is made again
        at each training epoch start and validation start when hooks were put on other modules.
        """
        if not self.fold_teacher_bn:
            return self.teacher
        if self._folded_teacher is None:
            self._fold_teacher()
        return self._folded_teacher[0]

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        # after every checkpoint restore (some strategies restore after on_fit_start), before the first step
        self._refresh_folded_teacher()
        if self._eval_warning_filter is not None and self._eval_warning_filter in warnings.filters:
            warnings.filters.remove(self._eval_warning_filter)
        self._eval_warning_filter = None

    @override
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.teacher.eval()
        self._refold_if_hooks_changed()

    @override
    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # the same value on every process (a replicated parameter or a schedule): no sync needed
        for name, value in self.loss.monitored_values().items():
            log_global(self, f"train/{name}", value, on_step=False, on_epoch=True)

    def compute_loss_terms(
        self, student_logits: Tensor | tuple[Tensor, ...], teacher_logits: Tensor | tuple[Tensor, ...], targets: Tensor
    ) -> dict[str, Tensor]:
        """The named, weighted loss terms of one training step; the training loss is their sum.

        The public extension point: a subclass adds terms with access to both networks' logits, and keeps the
        step, the logging (each term as ``train/<term>_step`` / ``_epoch``) and every metric::

            class WithConfidencePenalty(DistillationModule):
                def compute_loss_terms(self, student_logits, teacher_logits, targets):
                    terms = super().compute_loss_terms(student_logits, teacher_logits, targets)
                    entropy = -(student_logits.softmax(-1) * student_logits.log_softmax(-1)).sum(-1).mean()
                    terms["entropy"] = -0.1 * entropy
                    return terms

        Args:
            student_logits: ``(B, K)`` student logits (a tuple of views for multi-view losses).
            teacher_logits: the teacher's logits, same structure; computed under ``no_grad``.
            targets: ``(B,)`` class indices.

        Returns:
            The loss strategy's terms for the epoch being trained (``epoch = current_epoch + 1``), in fp32.
        """
        # loss math in fp32 even under mixed precision (the loss also upcasts its inputs)
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.loss(student_logits, teacher_logits, targets, epoch=self.current_epoch + 1)

    @override
    def training_terms(self, inputs: Any, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():  # not inference_mode: the loss saves teacher probabilities for backward
            teacher_logits = apply_views(self.teacher_network(), inputs)
        student_logits = apply_views(self.student, inputs)
        terms = self.compute_loss_terms(student_logits, teacher_logits, targets)
        return first_view(student_logits), terms

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor | None]:
        logits = self._evaluate(batch, "val", self.val_acc1, self.val_acc5, self.val_loss)
        teacher_logits = None
        wanted = self.teacher_in_validation or not self._teacher_acc_logged
        if self.teacher_available and wanted and not self.trainer.sanity_checking:
            with torch.no_grad():
                teacher_logits = first_view(apply_views(self.teacher_network(), batch[0]))
            if not self._teacher_acc_logged:
                self.teacher_val_acc1.update(teacher_logits, batch[1])
        return {"student_logits": logits, "teacher_logits": teacher_logits, "targets": batch[1]}

    @override
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._teacher_acc_logged or self.trainer.sanity_checking:
            return
        if not self.teacher_available:
            rank_zero_info("No teacher weights are loaded: teacher/val_acc1 is not logged.")
        else:
            # self.log is not allowed in on_fit_start: log the teacher once, at the first real validation epoch
            # compute() reads the state synced across processes: already global
            log_global(self, "teacher/val_acc1", self.teacher_val_acc1.compute())
            self.teacher_val_acc1.reset()
        self._teacher_acc_logged = True

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.save_teacher:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(_TEACHER_PREFIX)]:
                del state[key]

    @override
    def optional_state_prefixes(self, state_dict: Mapping[str, Any]) -> tuple[str, ...]:
        # a checkpoint saved without the teacher keeps the teacher this module already has
        if any(k.startswith(_TEACHER_PREFIX) for k in state_dict):
            self.teacher_available = True  # saved with save_teacher=True: it brings its teacher along
            return super().optional_state_prefixes(state_dict)
        return (*super().optional_state_prefixes(state_dict), _TEACHER_PREFIX)


class ClassificationModule(ClassifierSystem):
    """Plain supervised training of one classifier (teachers and student baselines).

    Same metrics, optimizer defaults, logging names and checkpoint record as :class:`DistillationModule`
    (``train/loss_step``, ``train/ce_epoch``, ``val/acc1``, ``val/acc1_best``, ...). Its checkpoints load as
    ``teacher_weights``.

    Args:
        model: the network: an ``nn.Module`` or a model name understood by :func:`~lightning_kd.models.create_model`.
        num_classes: number of classes; optional for a module network (inferred), required for a name (the CLI
            links it from ``data.num_classes``).
        optimizer: factory called with the model's parameters. Default: SGD lr 0.05, momentum 0.9, wd 5e-4.
        lr_scheduler: factory called with the optimizer, stepped every epoch; ``None`` for a constant rate.
            Default: MultiStepLR at epochs 150, 180, 210, gamma 0.1.
        weights: optional initial weights (checkpoint path or library weights spec), as for ``create_model``.
        cuda_graph: one CUDA-graph replay per training step on a CUDA device (see :class:`DistillationModule`).
        channels_last: NHWC memory format for the network and 4-D inputs.
    """

    def __init__(
        self,
        model: str | nn.Module,
        *,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = cifar_sgd,
        lr_scheduler: LRSchedulerCallable | None = cifar_multistep,
        weights: str | None = None,
        cuda_graph: bool = False,
        channels_last: bool = False,
    ) -> None:
        resolved = _resolve_num_classes(num_classes, model=model)
        if resolved is None:
            raise ValueError("num_classes is required for this model (it has no `num_classes` or final nn.Linear).")
        super().__init__(resolved, optimizer, lr_scheduler, cuda_graph, channels_last)
        weights = absolute_weights_path(weights)
        self.model = build_network(model, resolved, weights, "model")
        self._save_record(
            {
                **describe_network("model", model),
                "num_classes": resolved,
                "weights": weights,
                "cuda_graph": self.cuda_graph,
                "channels_last": self.channels_last,
                **describe_factory("optimizer", optimizer),
                **describe_factory("lr_scheduler", lr_scheduler),
            },
            ClassificationModule.__init__,
            inspect.currentframe(),
        )

    @classmethod
    @override
    def record_objects(cls) -> tuple[str, ...]:
        return ("model",)

    @property
    @override
    def network(self) -> nn.Module:
        return self.model

    @override
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    @override
    def training_terms(self, inputs: Any, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = first_view(apply_views(self.model, inputs))
        return logits, {"ce": F.cross_entropy(logits.float(), targets)}
