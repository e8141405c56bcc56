"""The one conversion of a batch's inputs to a memory format (``channels_last`` for 4-D tensors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def format_for(x: Tensor, memory_format: torch.memory_format) -> torch.memory_format:
    """``memory_format`` for a 4-D ``(N, C, H, W)`` tensor, the contiguous format for any other."""
    return memory_format if x.ndim == 4 else torch.contiguous_format


def map_inputs(inputs: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` applied to a tensor, or to each view of a tuple / list of views (the container type kept)."""
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(fn(x) for x in inputs)
    return fn(inputs)


def to_memory_format(inputs: Any, memory_format: torch.memory_format) -> Any:
    """The inputs (a tensor or views) in ``memory_format``; a tensor already in it is returned as it is."""
    return map_inputs(inputs, lambda x: x.contiguous(memory_format=format_for(x, memory_format)))
