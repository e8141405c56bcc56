"""Small argument checks shared by the DKD, MLKD and CTKD strategies (the common ones live in :mod:`.base`)."""

from __future__ import annotations

import math


def check_epoch(epoch: int) -> None:
    """Raise a ``ValueError`` unless ``epoch`` (the epoch being trained, counted from 1) is >= 1."""
    if not epoch >= 1:
        raise ValueError(
            f"epoch must be >= 1 (the epoch being trained, counted from 1), got {epoch!r}. "
            "DistillationModule passes trainer.current_epoch + 1."
        )


def check_positive_int(name: str, value: int, meaning: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer >= 1; ``meaning`` says what it counts."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 ({meaning}), got {value!r}.")


def check_finite(name: str, value: float) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
