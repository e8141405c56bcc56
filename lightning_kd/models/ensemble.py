"""``LogitEnsemble``: several classifiers that act as one, whose logits are the mean of theirs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LogitEnsemble", "mean_logits"]


def mean_logits(member_logits: Sequence[Tensor | tuple[Tensor, ...]]) -> Tensor | tuple[Tensor, ...]:
    r"""The element-wise mean :math:`\bar z = \frac{1}{M}\sum_m z_m` of ``M`` members' logits.

    Each entry is a ``(B, K)`` tensor, or a tuple of them (one per view of a multi-view batch); the result has the
    same structure. One member's logits are returned as they are (no operator runs).
    """
    if len(member_logits) == 1:
        return member_logits[0]
    first = member_logits[0]
    if isinstance(first, tuple):
        return tuple(torch.stack([m[v] for m in member_logits]).mean(0) for v in range(len(first)))
    return torch.stack(list(member_logits)).mean(0)


class LogitEnsemble(nn.Module):
    """An ensemble teacher: ``forward(x)`` is the mean of the members' logits.

    The members are kept in :attr:`members` (an ``nn.ModuleList``), so their state-dict keys are
    ``members.<i>.<name>``. All members must predict the same number of classes.

    Args:
        members: two or more classification networks.

    Raises:
        ValueError: with fewer than two members.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"A LogitEnsemble needs at least 2 members, got {len(members)}: use the network itself.")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        """The mean of the members' ``(B, K)`` logits for the batch ``x``."""
        return mean_logits([member(x) for member in self.members])
