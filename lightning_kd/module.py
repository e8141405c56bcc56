"""The two LightningModules: :class:`DistillationModule` (teacher -> student) and :class:`ClassificationModule`."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_kd._record import (
    absolute_weights_path,
    class_path,
    describe_factory,
    describe_loss,
    describe_network,
)
from lightning_kd._system import (
    Batch,
    ClassifierSystem,
    log_global,
)
from lightning_kd._views import apply_views, first_view
from lightning_kd.contracts import ValidationOutput, ViewsData
from lightning_kd.features import feature_network
from lightning_kd.losses.base import DistillationLoss
from lightning_kd.losses.features import FeatureLoss
from lightning_kd.models.ensemble import LogitEnsemble
from lightning_kd.models.external import TIMM_PREFIX, TORCHVISION_PREFIX
from lightning_kd.models.factory import build_network, infer_num_classes
from lightning_kd.optim import cifar_multistep, cifar_sgd
from lightning_kd.teacher import Teacher
from lightning_kd.teacher_cache import CachedTeacher, cache_metadata, teacher_fingerprint

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


TeacherSpec = str | nn.Module


def _teacher_specs(teacher: TeacherSpec | Sequence[TeacherSpec]) -> list[TeacherSpec]:
    """The teacher networks as a list: one entry for a single teacher, one per member of an ensemble."""
    if isinstance(teacher, (list, tuple)):
        if not teacher:
            raise ValueError("teacher is an empty list: give one network (name or module), or a list of several.")
        return list(teacher)
    return [teacher]


def _teacher_weight_list(weights: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    """One weights entry per teacher (absolute paths); a list must have one entry per teacher."""
    if weights is None:
        return [None] * n
    if isinstance(weights, str):
        if n != 1:
            raise ValueError(
                f"teacher_weights is one path ({weights!r}) but there are {n} teachers: give a list of {n} "
                "checkpoint paths, one per teacher, in the same order (null for a teacher built with its weights)."
            )
        return [absolute_weights_path(weights)]
    weights = list(weights)
    if len(weights) != n:
        raise ValueError(
            f"teacher_weights has {len(weights)} entries but there are {n} teachers: give one checkpoint path per "
            "teacher, in the same order."
        )
    return [absolute_weights_path(w) for w in weights]


def _describe_teacher(teacher: TeacherSpec | Sequence[TeacherSpec]) -> dict[str, Any]:
    """The record of the teacher argument: names as given, or the class paths where modules were given."""
    if not isinstance(teacher, (list, tuple)):
        return describe_network("teacher", teacher)
    if all(isinstance(t, str) for t in teacher):
        return {"teacher": list(teacher)}
    return {"teacher_class": [t if isinstance(t, str) else class_path(type(t)) for t in teacher]}


def _weights_file_missing(weights: str | None) -> bool:
    """``weights`` names a checkpoint file (not a library spec) that does not exist."""
    return (
        weights is not None
        and not weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))
        and not Path(weights).expanduser().is_file()
    )


def _check_feature_loss(
    feature_loss: FeatureLoss | None, loss: DistillationLoss, teacher: Any, teacher_cache: str | None
) -> None:
    """Refuse a feature loss the module cannot serve, naming why."""
    if feature_loss is None:
        return
    if not isinstance(feature_loss, FeatureLoss):
        raise TypeError(
            f"feature_loss must be a FeatureLoss (e.g. lightning_kd.losses.FitNet), got {type(feature_loss).__name__}"
        )
    if teacher_cache is not None:
        raise ValueError(
            "teacher_cache holds the teacher's logits only, but the feature loss reads the teacher's intermediate "
            "features each step: drop teacher_cache (the teacher must run) or the feature loss."
        )
    if loss.student_heads != 1:
        raise ValueError(
            f"{type(loss).__name__} trains two student heads; a feature loss is combined with a one-head logit loss "
            "(KD, DKD, CTKD) only."
        )
    if loss.num_views != 1:
        raise ValueError(
            f"{type(loss).__name__} takes {loss.num_views} views of each image; a feature loss reads one view's "
            "features: combine it with a one-view loss (KD, DKD, CTKD)."
        )
    if isinstance(teacher, (list, tuple)) and len(teacher) > 1:
        raise ValueError(
            f"A feature loss reads one teacher's intermediate features, but {len(teacher)} teachers were given: "
            "distil features from a single teacher."
        )


def _check_student_heads(loss: DistillationLoss, student: Any) -> None:
    """A loss on two heads needs a student that gives them (a distillation token)."""
    if loss.student_heads == 1:
        return
    # timm's and this package's distilled ViTs hold the distillation head as `head_dist` (None without a token)
    if isinstance(student, str):
        distilled = student.endswith("_distilled")
    else:
        distilled = (
            callable(getattr(student, "forward_heads", None)) and getattr(student, "head_dist", None) is not None
        )
    if not distilled:
        name = student if isinstance(student, str) else type(student).__name__
        raise ValueError(
            f"{type(loss).__name__} trains a student's distillation-token head, but the student {name!r} has none: use "
            "a student built with a distillation token (e.g. student: deit_tiny_distilled), or a one-head loss (KD)."
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
        teacher: the frozen network to distil from, given the same ways; or a list of several (names or modules),
            an ensemble teacher whose logits are the mean of theirs (each member frozen and folded like a single
            teacher; ``teacher/val_acc1`` is the ensemble's, ``teacher/val_acc1_member<i>`` each member's). A single
            teacher's state is saved under ``teacher.*``, an ensemble's under ``teacher.members.<i>.*``.
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
            absolute path. With several teachers, a list with one entry per teacher, in the same order (``None``
            for a teacher that brings its own weights).
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
        teacher_cache: a teacher-logit cache file written by ``lightning-kd cache-teacher``
            (:mod:`lightning_kd.teacher_cache`): training steps read the teacher's logits of each sample's view from
            it instead of running the teacher (validation, test and predict still run it). Needs training batches
            that carry view keys (``CIFAR100DataModule(device_augment=True, view_keys=True)``) and a one-view loss
            (not MLKD). ``fit`` checks the cache's metadata against the teacher's weights, the data, the augmentation
            and the normalization and refuses a mismatch naming the field; a resumed fit checks it again against the
            checkpoint's. Recorded as an absolute path.
        feature_loss: an intermediate-feature objective added to ``loss`` (:class:`~lightning_kd.losses.FitNet`,
            :class:`~lightning_kd.losses.AT`, :class:`~lightning_kd.losses.LocalityGuidance`): it declares the
            student's and the teacher's layers (indices of ``forward_intermediates`` or submodule names,
            :mod:`lightning_kd.features`), which the training step takes from the same forward passes as the logits
            (the teacher's from its folded copy with ``fold_teacher_bn``); its terms are summed and logged with the
            logit loss's. Its learnable adapters are optimized with the student and saved in checkpoints
            (``feature_loss.*``), never exported with the student. Not with several teachers, a teacher cache or a
            two-view loss.
        teacher_input_size: the side of the images the teacher sees: each batch is resized on its device (bilinear,
            ``align_corners=False``) to ``teacher_input_size`` pixels square before the teacher's forward, in
            training and evaluation; ``None`` (default) gives the teacher the student's inputs. The paper's ViT runs
            feed 224-pixel images to the student and 32 to its ResNet-56 teacher.

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
        teacher: str | nn.Module | list[str | nn.Module],
        loss: DistillationLoss,
        *,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = cifar_sgd,
        lr_scheduler: LRSchedulerCallable | None = cifar_multistep,
        teacher_weights: str | list[str | None] | None = None,
        student_weights: str | None = None,
        save_teacher: bool = False,
        cuda_graph: bool = False,
        channels_last: bool = False,
        fold_teacher_bn: bool = False,
        teacher_cache: str | None = None,
        feature_loss: FeatureLoss | None = None,
        teacher_input_size: int | None = None,
    ) -> None:
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"loss must be a DistillationLoss (e.g. lightning_kd.losses.KD), got {type(loss).__name__}")
        _check_feature_loss(feature_loss, loss, teacher, teacher_cache)
        _check_student_heads(loss, student)
        specs = _teacher_specs(teacher)
        roles = ["teacher"] if len(specs) == 1 else [f"teacher {i}" for i in range(len(specs))]
        resolved = _resolve_num_classes(num_classes, student=student, **dict(zip(roles, specs, strict=True)))
        if resolved is None:
            raise ValueError(
                "num_classes is required when neither network tells it (both given by name, or modules without a "
                "`num_classes` attribute or final nn.Linear): pass num_classes=..."
            )
        super().__init__(resolved, optimizer, lr_scheduler, cuda_graph, channels_last)
        weights = _teacher_weight_list(teacher_weights, len(specs))
        student_weights = absolute_weights_path(student_weights)
        self.student = build_network(student, resolved, student_weights, "student")
        missing = [w for w in weights if _weights_file_missing(w)]
        members = [
            build_network(spec, resolved, None if w in missing else w, role)
            for spec, w, role in zip(specs, weights, roles, strict=True)
        ]
        self.teacher = members[0] if len(members) == 1 else LogitEnsemble(members)
        if missing:
            shown = missing[0] if len(missing) == 1 else missing
            rank_zero_warn(
                f"teacher_weights {shown!r} does not exist: the teacher has no trained weights. `fit` will "
                "refuse to start; validate/test/predict evaluate the student alone and skip the teacher/* metrics. "
                "To distil, pass the teacher checkpoint's path (--model.init_args.teacher_weights PATH).",
                category=PossibleUserWarning,
            )
        for spec, w in zip(specs, weights, strict=True):
            if isinstance(spec, str) and w is None:
                rank_zero_warn(
                    f"The teacher {spec!r} is built with random weights (no teacher_weights given). Distilling from "
                    "it only makes sense when a checkpoint with the teacher's weights is loaded next.",
                    category=PossibleUserWarning,
                )
        #: the frozen teacher: eval lock, no_grad forwards, folded copies, weights present or not
        teacher_cache = absolute_weights_path(teacher_cache)
        sources = {"available": not missing, "fold_bn": fold_teacher_bn, "input_size": teacher_input_size}
        if teacher_cache is None:
            self.teacher_component = Teacher(self, **sources)
        else:
            self.teacher_component = CachedTeacher(self, teacher_cache, **sources)
        self.loss = loss
        self.feature_loss = feature_loss
        # the student's (logits, features) graph over its own submodules; a tuple keeps it out of state_dict
        self._student_features: tuple[nn.Module, ...] = ()
        if feature_loss is not None:
            self._student_features = (feature_network(self.student, feature_loss.student_layers, "student"),)
            self.teacher_component.request_features(feature_loss.teacher_layers)
        self.save_teacher = save_teacher
        #: compute the teacher's logits in every validation step (a callback such as LogitStatistics sets it);
        #: otherwise only at the first validation epoch, for ``teacher/val_acc1``
        self.teacher_in_validation = False
        self.teacher_val_acc1 = MulticlassAccuracy(num_classes=resolved, average="micro")
        if len(members) > 1:  # one accuracy per member beside the ensemble's: teacher/val_acc1_member<i>
            self.teacher_member_val_acc1 = nn.ModuleList(
                MulticlassAccuracy(num_classes=resolved, average="micro") for _ in members
            )
        self._teacher_acc_logged = False
        self.fold_teacher_bn = bool(fold_teacher_bn)
        recorded_weights = weights if isinstance(teacher_weights, (list, tuple)) else weights[0]
        self._save_record(
            {
                **describe_network("student", student),
                **_describe_teacher(teacher),
                "num_classes": resolved,
                "teacher_weights": recorded_weights,
                "student_weights": student_weights,
                "save_teacher": save_teacher,
                "cuda_graph": self.cuda_graph,
                "channels_last": self.channels_last,
                "fold_teacher_bn": self.fold_teacher_bn,
                "teacher_cache": teacher_cache,
                "teacher_input_size": teacher_input_size,
                **{f"loss.{k}": v for k, v in loss.hparams_dict().items()},
                **describe_loss(feature_loss, "feature_loss"),
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
        if self.feature_loss is not None:  # the adapters (regressors) learn with the student
            yield from self.feature_loss.parameters()

    @property
    def teacher_available(self) -> bool:
        """Whether the teacher's trained weights are loaded (else the student is evaluated alone)."""
        return self.teacher_component.available

    @teacher_available.setter
    def teacher_available(self, value: bool) -> None:
        self.teacher_component.available = bool(value)

    @override
    def frozen_parameters(self) -> Iterator[nn.Parameter]:
        return self.teacher_component.parameters()

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
        self.teacher_component.lock_eval()
        return self

    @override
    def setup(self, stage: str) -> None:
        if stage == "fit":  # before anything else: without trained weights there is nothing to distil
            recorded = self.hparams.get("teacher_weights")
            missing = [w for w in (recorded if isinstance(recorded, list) else [recorded]) if _weights_file_missing(w)]
            self.teacher_component.require_weights(missing[0] if len(missing) == 1 else missing or recorded)
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        data_views = datamodule.num_views if isinstance(datamodule, ViewsData) else 1
        if stage == "fit" and datamodule is not None and data_views != self.loss.num_views:
            hint = "true" if self.loss.num_views == 2 else "false"
            raise ValueError(
                f"{type(self.loss).__name__} takes {self.loss.num_views} view(s) of each training image but the data "
                f"module gives {data_views}: set two_views: {hint} on the data module "
                f"(--data.init_args.two_views {hint})."
            )
        if stage == "fit":
            self.teacher_component.setup_fit(self, datamodule)  # a cache opens and checks itself here

    def teacher_cache_metadata(self, space: Any) -> dict[str, Any]:
        """The metadata a teacher cache must carry to serve this module on data with the given view space."""
        architecture = self.hparams.get("teacher", self.hparams.get("teacher_class"))
        return cache_metadata(
            architecture=architecture,
            weights_sha256=teacher_fingerprint(self.teacher),
            num_classes=self.num_classes,
            space=space,
        )

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.teacher_component.check_checkpoint_record(checkpoint.get("teacher_cache"))

    @override
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.teacher_component.silence_eval_mode_warning(self)

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
        if self.teacher_component.refresh(self.trainer.strategy):
            self.invalidate_captured_step()  # a captured step reads the previous copy's weights

    def _refold_if_hooks_changed(self) -> None:
        if self.teacher_component.refresh_if_hooks_changed(self.trainer.strategy):
            self.invalidate_captured_step()

    def teacher_network(self) -> nn.Module:
        """The network that computes the teacher's logits: the folded copy with ``fold_teacher_bn``, else the teacher.

        Under FSDP, where the teacher is sharded, the teacher itself even with ``fold_teacher_bn``. With several
        teachers, an ensemble of their (folded) copies. Outside a Trainer the folded copy is built on first use.

        Hooks on the teacher's modules fire on the folded copy too: the copy keeps each module that has a hook when
        it is made, sharing its hooks (see :func:`~lightning_kd.models.fold.fold_batchnorm`); the copy is made again
        at each training epoch start and validation start when hooks were put on other modules.
        """
        return self.teacher_component.forward_network()

    @override
    def step_extras(self, batch_extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return self.teacher_component.step_extras(batch_extras)

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        self.teacher_component.place(self.device)  # a cache's lookups on the training device
        # after every checkpoint restore (some strategies restore after on_fit_start), before the first step
        self._refresh_folded_teacher()
        self.teacher_component.restore_warnings()

    @override
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.teacher_component.lock_eval()
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
    def training_terms(
        self, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self.teacher_component.outputs(inputs, extras)  # frozen, under no_grad (or cached)
        if self.loss.student_heads == 2:  # a distillation token: (class head, distillation head)
            heads = self.student.forward_heads(inputs)
            terms = self.compute_loss_terms(heads, teacher.logits, targets)
            return (heads[0] + heads[1]) / 2, terms  # accuracy as evaluated: the mean of the heads
        if self.feature_loss is None:
            student_logits = apply_views(self.student, inputs)
            return first_view(student_logits), self.compute_loss_terms(student_logits, teacher.logits, targets)
        student_logits, student_features = self._student_features[0](inputs)  # one forward: logits and features
        terms = self.compute_loss_terms(student_logits, teacher.logits, targets)
        feature_terms = self.feature_loss(student_features, teacher.features)  # fp32 inside
        clash = sorted(terms.keys() & feature_terms.keys())
        if clash:
            raise ValueError(f"the feature loss's terms {clash} have the names of the logit loss's: rename them.")
        return student_logits, {**terms, **feature_terms}

    @override
    def validation_step(self, batch: Batch, batch_idx: int) -> ValidationOutput:
        logits = self._evaluate(batch, "val", self.val_acc1, self.val_acc5, self.val_loss)
        teacher_logits = None
        wanted = self.teacher_in_validation or not self._teacher_acc_logged
        if self.teacher_available and wanted and not self.trainer.sanity_checking:
            teacher = self.teacher_component.outputs(batch[0])
            teacher_logits = first_view(teacher.logits)
            if not self._teacher_acc_logged:
                self.teacher_val_acc1.update(teacher_logits, batch[1])
                # a wrapped (FSDP) ensemble gives only its mean: then no per-member values
                for metric, logits in zip(self._member_metrics(), teacher.member_logits, strict=False):
                    metric.update(first_view(logits), batch[1])
        return ValidationOutput(student_logits=logits, teacher_logits=teacher_logits, targets=batch[1])

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
            for i, metric in enumerate(self._member_metrics()):
                log_global(self, f"teacher/val_acc1_member{i}", metric.compute())
                metric.reset()
        self._teacher_acc_logged = True

    def _member_metrics(self) -> Sequence[MulticlassAccuracy]:
        """The per-member teacher accuracies (none for a single teacher)."""
        return getattr(self, "teacher_member_val_acc1", ())

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.save_teacher:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(_TEACHER_PREFIX)]:
                del state[key]
        record = self.teacher_component.checkpoint_record()
        if record is not None:  # only what identifies a cache: its logits are never part of a checkpoint
            checkpoint["teacher_cache"] = record

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
    def training_terms(
        self, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        del extras  # nothing beyond the inputs: a plain classifier
        logits = first_view(apply_views(self.model, inputs))
        return logits, {"ce": F.cross_entropy(logits.float(), targets)}
