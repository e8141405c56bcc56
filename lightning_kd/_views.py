"""Batches of one view or several (MLKD's ``(weak, strong)``): run a network on each, pick the first."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["apply_views", "first_view"]


def apply_views(net: nn.Module, inputs: Tensor | tuple[Tensor, ...] | list[Tensor]) -> Tensor | tuple[Tensor, ...]:
    """Run ``net`` on a batch, or on each view of a multi-view batch (MLKD's ``(weak, strong)``)."""
    if isinstance(inputs, (tuple, list)):
        return tuple(net(view) for view in inputs)
    return net(inputs)


def first_view(logits: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The logits of the first (weak / un-augmented) view, used for accuracy."""
    return logits[0] if isinstance(logits, tuple) else logits
