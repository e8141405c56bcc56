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
- :class:`KeyedViewsData` and :class:`ViewSpace`: a data module whose training batches carry a third element, each
  sample's view key ``index * num_views + view`` in a finite space of augmented views, and that describes that
  space (what a teacher-logit cache is checked against).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypedDict, runtime_checkable

from torch import Tensor

__all__ = [
    "KeyedViewsData",
    "MonitoredTemperature",
    "TeacherInValidation",
    "ValidationOutput",
    "ViewSpace",
    "ViewsData",
]


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


@dataclass(frozen=True)
class ViewSpace:
    """The complete set of training views a data module draws from: every (image, view) pair has a key.

    Attributes:
        num_images: training images (keys run over ``0 .. num_images * num_views - 1``).
        num_views: distinct augmented views of each image (162 for crop 32 with padding 4 and flips).
        image_size: the crop's side in pixels.
        padding: the zero border added before cropping.
        flips: whether horizontal flips are drawn.
        mean: the normalization's channel means.
        std: the normalization's channel standard deviations.
        data_fingerprint: SHA-256 of the training images and labels as loaded.
        view_order: how a key decomposes (documentation for readers of a cache file).
    """

    num_images: int
    num_views: int
    image_size: int
    padding: int
    flips: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_fingerprint: str
    view_order: str = "key = index * num_views + (top * (2 * padding + 1) + left) * 2 + flip"

    def as_dict(self) -> dict[str, Any]:
        """Primitive values only (JSON, checkpoints)."""
        record = asdict(self)
        record["mean"], record["std"] = list(self.mean), list(self.std)
        return record


@runtime_checkable
class KeyedViewsData(Protocol):
    """A data module that can key each training sample's view (for a teacher-logit cache).

    ``view_keys`` turns the third batch element on; :meth:`view_space` (after ``setup("fit")``) describes the keys,
    or returns ``None`` when the data module's current settings draw views that have no finite key space.
    """

    view_keys: bool

    def view_space(self) -> ViewSpace | None: ...
