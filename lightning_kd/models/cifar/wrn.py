"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016) for CIFAR."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    When the width changes, the shortcut is a 1x1 conv applied to the *activated* input, as in the
    reference; otherwise it is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        # Named ``convShortcut`` as in the published checkpoints.
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class _Stage(nn.Module):
    # A wrapper only so that keys read ``block1.layer.0...`` like the reference checkpoints.
    def __init__(self, in_planes: int, out_planes: int, num_blocks: int, stride: int) -> None:
        super().__init__()
        blocks = [PreActBlock(in_planes, out_planes, stride)]
        blocks += [PreActBlock(out_planes, out_planes, 1) for _ in range(num_blocks - 1)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(FeatureClassifier):
    """WRN-depth-width: a 3x3 stem, three stages of pre-activation blocks, then BN-ReLU and pooling.

    Args:
        depth: Total depth; ``depth - 4`` must be divisible by 6.
        widen_factor: Channel multiplier of the stages (16, 32, 64 times this).
        num_classes: Number of output logits.

    Raises:
        ValueError: If ``depth`` does not have the form ``6n + 4``.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got depth={depth}.")
        self.num_classes = num_classes
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.block1 = _Stage(widths[0], widths[1], n, stride=1)
        self.block2 = _Stage(widths[1], widths[2], n, stride=2)
        self.block3 = _Stage(widths[2], widths[3], n, stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init written out as in the original WRN code: std = sqrt(2 / (k * k * out_channels)).
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.fc

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return ``[stem, block1, block2, block3]`` outputs as the reference ``feats``.

        The blocks are pre-activation, so these are (as in the reference) not followed by a ReLU.
        """
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        return [f0, f1, f2, f3]

    def _pre_pool(self, x: Tensor) -> Tensor:
        # The last block is pre-activation, so the network ends with its own BN-ReLU.
        return F.relu(self.bn1(x))


@register_model
def wrn_16_1(num_classes: int = 100) -> WideResNet:
    """WRN-16-1 for CIFAR."""
    return WideResNet(16, 1, num_classes)


@register_model
def wrn_16_2(num_classes: int = 100) -> WideResNet:
    """WRN-16-2 for CIFAR."""
    return WideResNet(16, 2, num_classes)


@register_model
def wrn_40_1(num_classes: int = 100) -> WideResNet:
    """WRN-40-1 for CIFAR."""
    return WideResNet(40, 1, num_classes)


@register_model
def wrn_40_2(num_classes: int = 100) -> WideResNet:
    """WRN-40-2 for CIFAR, the CRD benchmark teacher."""
    return WideResNet(40, 2, num_classes)
