"""Channel shuffle shared by the ShuffleNet families."""

from __future__ import annotations

from torch import Tensor


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` channel groups: ``(N, g*c, H, W) -> (N, c*g, H, W)``.

    Channel ``i * c + j`` moves to position ``j * g + i``, so the next grouped conv sees every group.
    """
    n, channels, h, w = x.shape
    return x.view(n, groups, channels // groups, h, w).transpose(1, 2).reshape(n, channels, h, w)
