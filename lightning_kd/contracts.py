"""What modules, losses, data modules and callbacks read from each other, declared in one place.

Each contract is a :class:`typing.Protocol` (checked with ``isinstance`` where a component meets an object it did not
build) or a typed dict:

- :class:`ViewsData`: a data module says how many views of each training image it gives (MLKD needs 2). The module
  checks it against the loss's ``DistillationLoss.num_views`` before training.
- :class:`TeacherInValidation`: a module whose validation can compute the teacher's logits at every epoch when a
  callback asks (``LogitStatistics`` sets ``teacher_in_validation = True``).
- :class:`MonitoredTemperature`: a loss gives the base temperature a monitor reads (``LogitStatistics``' effective
  per-sample temperature), ``None`` when it standardizes nothing or has no temperature.
- :class:`ValidationOutput`: the one spelling of what ``validation_step`` returns, for callbacks.
"""

from __future__ import annotations

from typing import Protocol, TypedDict, runtime_checkable

from torch import Tensor

__all__ = ["MonitoredTemperature", "TeacherInValidation", "ValidationOutput", "ViewsData"]


@runtime_checkable
class ViewsData(Protocol):
    """A data module whose training samples are ``num_views`` views of each image (1, or 2 for MLKD)."""

    @property
    def num_views(self) -> int: ...


@runtime_checkable
class TeacherInValidation(Protocol):
    """A module that computes the teacher's logits in every validation step when this is ``True``."""

    teacher_in_validation: bool


@runtime_checkable
class MonitoredTemperature(Protocol):
    """A loss that tells monitors its current base temperature (a float, a 0-d tensor, or ``None``)."""

    def monitored_temperature(self) -> float | Tensor | None: ...


class ValidationOutput(TypedDict):
    """What a module's ``validation_step`` returns.

    Attributes:
        student_logits: ``(B, K)`` logits of the network being trained and evaluated (a ClassificationModule's model).
        teacher_logits: ``(B, K)`` teacher logits when computed this step, else ``None``.
        targets: ``(B,)`` class indices.
    """

    student_logits: Tensor
    teacher_logits: Tensor | None
    targets: Tensor
