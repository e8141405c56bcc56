"""The distillation-loss strategy interface."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

Logits = Tensor | tuple[Tensor, ...]


class DistillationLoss(nn.Module, ABC):
    """Base class of every distillation objective (the *strategy* that :class:`DistillationModule` calls).

    A subclass computes named, already-weighted scalar terms; the training loss is their sum. Keeping the
    terms separate lets the module log each one as ``train/<term>``.

    The record of a loss (what the module saves flattened as ``loss.temperature``, ... in checkpoints and sends to
    loggers) is read from the constructor signatures: each named argument of ``__init__`` (of the subclass and of
    every base up to this class) is recorded as the value of the attribute of the same name. A subclass stores its
    arguments under their names (``self.temperature = float(temperature)``) and writes nothing else; an argument
    kept under another name (or not at all) is recorded with :meth:`_record_hparams` instead.

    A loss that needs more than one view of each training image (MLKD's ``(weak, strong)``) says so with
    :attr:`num_views`; the module checks it against the data module before training.
    """

    #: views of each training image the loss takes: 1 (logits tensors) or 2 (tuples ``(weak, strong)``)
    num_views: ClassVar[int] = 1
    #: outputs of the student per image the loss takes: 1 (its logits) or 2 (a vision transformer's class and
    #: distillation heads, from the student's ``forward_heads``; :class:`~lightning_kd.losses.TokenKD`)
    student_heads: ClassVar[int] = 1
    #: whether the terms depend on ``epoch`` (a warm-up, a schedule): a CUDA-graphed step is re-captured at every
    #: epoch start for such a loss, since the graph bakes in Python numbers
    epoch_dependent: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._hparams: dict[str, Any] = {}
        # Value checks on accelerator tensors need a host sync; do them once, on the first batch only.
        self._checked_on_accelerator = False

    @abstractmethod
    def forward(
        self, student_logits: Logits, teacher_logits: Logits, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        """Compute the loss terms.

        Args:
            student_logits: ``(B, K)`` student logits (a tuple of views for multi-view losses such as MLKD).
            teacher_logits: the teacher's logits, same structure and shapes.
            targets: ``(B,)`` integer class indices.
            epoch: the epoch being trained, counted from 1 (for warm-ups and schedules).

        Returns:
            Named scalar fp32 terms, already weighted; their sum is the training loss.
        """

    def monitored_values(self) -> dict[str, Tensor]:
        """Learned or scheduled values of the loss worth watching, as detached scalar tensors (none by default).

        The module logs each as ``train/<name>`` once per training epoch (at its end), so reading them never
        synchronizes inside a step. CTKD returns its learned temperature here.
        """
        return {}

    def monitored_temperature(self) -> float | Tensor | None:
        """The base temperature a monitor reads (:class:`~lightning_kd.contracts.MonitoredTemperature`).

        The ``temperature`` attribute of a loss that has one (KD, DKD, MLKD), else ``None``; CTKD gives its current
        learned temperature.
        """
        value = getattr(self, "temperature", None)
        return value if isinstance(value, (int, float, Tensor)) else None

    def hparams_dict(self) -> dict[str, Any]:
        """The constructor arguments as primitives, for checkpoint hyperparameters: ``class_path`` and each argument.

        Raises:
            TypeError: a constructor argument is neither stored under its name nor given to :meth:`_record_hparams`,
                or its value is not a primitive; the message names it.
        """
        return constructor_record(
            self,
            init_argument_names(type(self), DistillationLoss, include_last=False),
            self._hparams,
            hint="or call self._record_hparams({name}=...)",
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams_dict().items() if k != "class_path")

    def _record_hparams(self, **kwargs: Any) -> None:
        """Record arguments that are not stored under their own names (or extra values) in the loss's record."""
        self._hparams.update({k: _checked_primitive(type(self), k, v) for k, v in kwargs.items()})

    def _check_inputs(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> None:
        """Validate shapes (free) and target values (CPU always; accelerators only on the first batch)."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                "must have the same shape (batch, num_classes): build both models with the same num_classes."
            )
        if student_logits.ndim != 2:
            raise ValueError(f"Logits must have shape (batch, num_classes), got {tuple(student_logits.shape)}.")
        if targets.shape != student_logits.shape[:1]:
            raise ValueError(
                f"Targets of shape {tuple(targets.shape)} do not match a batch of {student_logits.shape[0]} logits: "
                "pass one integer class index per sample."
            )
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"Targets must be integer class indices, got dtype {targets.dtype}.")
        if targets.device.type != "cpu":
            if self._checked_on_accelerator:
                return
            self._checked_on_accelerator = True
        num_classes = student_logits.shape[1]
        if targets.numel() and bool(((targets < 0) | (targets >= num_classes)).any()):
            bad = targets[(targets < 0) | (targets >= num_classes)][:5].tolist()
            raise ValueError(
                f"Targets out of range: found {bad} but the logits have {num_classes} classes (valid: 0.."
                f"{num_classes - 1}). Check the data's labels and the models' num_classes."
            )


def _checked_primitive(cls: type, name: str, value: Any) -> Any:
    """``value`` as a record entry (tuples as lists), or a ``TypeError`` naming the argument."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str, type(None))) for v in value):
        return list(value)
    raise TypeError(
        f"Loss hyperparameter {cls.__name__}.{name} must be a primitive (bool, int, float, str, None or a list of "
        f"them) to be recorded in checkpoints, got {type(value).__name__}."
    )


def check_temperature(name: str, value: float) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a positive number."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}. Use a positive temperature such as 4.0 (or 2.0 with LS).")


def check_weight(name: str, value: float) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a non-negative number."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}. Loss weights are non-negative; use 0 to disable a term.")


def init_argument_names(cls: type, last: type, *, include_last: bool) -> list[str]:
    """Named ``__init__`` arguments of ``cls`` and of its bases up to ``last`` (its own included or not), in order."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is last and not include_last:
            break
        if "__init__" in vars(klass):
            for param in inspect.signature(vars(klass)["__init__"]).parameters.values():
                named = param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
                if named and param.name != "self" and param.name not in names:
                    names.append(param.name)
        if klass is last:
            break
    return names


def constructor_record(
    obj: Any, names: Sequence[str], recorded: Mapping[str, Any] | None = None, *, hint: str = ""
) -> dict[str, Any]:
    """``class_path`` and each constructor argument of ``obj`` as a primitive: the attribute of the same name, or the
    value in ``recorded`` (arguments kept under another name).

    Raises:
        TypeError: an argument neither stored nor recorded, or a value that is not a primitive; the message names it
            (``hint``, formatted with ``name``, says what else the class can do).
    """
    recorded = recorded or {}
    record: dict[str, Any] = {}
    for name in names:
        if name in recorded:
            record[name] = recorded[name]
        elif hasattr(obj, name):
            record[name] = _checked_primitive(type(obj), name, getattr(obj, name))
        else:
            extra = f", {hint.format(name=name)}" if hint else ""
            raise TypeError(
                f"{type(obj).__name__}.__init__ takes {name!r} but the loss keeps no attribute of that name, so its "
                f"record cannot hold it: store it as self.{name} in __init__{extra}."
            )
    record.update({k: v for k, v in recorded.items() if k not in record})
    return {"class_path": f"{type(obj).__module__}.{type(obj).__qualname__}", **record}
