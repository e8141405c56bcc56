"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2).

Three stages of basic blocks on a 32x32 input, as used by the CRD/RepDistiller and mdistiller zoos
(``resnet8`` ... ``resnet110``, and the 4x wider ``resnet8x4`` / ``resnet32x4``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-projection shortcut (post-activation)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Named ``downsample`` (not ``shortcut``) so reference checkpoints load with strict=True.
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(FeatureClassifier):
    """CIFAR ResNet: a 3x3 stem and three stages (strides 1, 2, 2) of ``(depth - 2) / 6`` basic blocks.

    Args:
        depth: Total number of weighted layers; ``depth - 2`` must be divisible by 6.
        widths: Channels of the stem and of the three stages, e.g. ``(16, 16, 32, 64)``.
        num_classes: Number of output logits.

    Raises:
        ValueError: If ``depth`` does not have the form ``6n + 2`` or ``widths`` does not have 4 entries.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet depth must be 6n + 2 with n >= 1, got depth={depth}.")
        if len(widths) != 4:
            raise ValueError(f"CifarResNet widths must have 4 entries (stem + 3 stages), got {widths}.")
        self.num_classes = num_classes
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_stage(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[2], widths[3], blocks_per_stage, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.fc

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return ``[stem, layer1, layer2, layer3]`` outputs (after ReLU), as the reference ``feats``."""
        return self._stem_and_stages(x, (self.layer1, self.layer2, self.layer3))


_BASE_WIDTHS = (16, 16, 32, 64)
_X4_WIDTHS = (32, 64, 128, 256)


@register_model
def resnet8(num_classes: int = 100) -> CifarResNet:
    """ResNet-8 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(8, _BASE_WIDTHS, num_classes)


@register_model
def resnet14(num_classes: int = 100) -> CifarResNet:
    """ResNet-14 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(14, _BASE_WIDTHS, num_classes)


@register_model
def resnet20(num_classes: int = 100) -> CifarResNet:
    """ResNet-20 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(20, _BASE_WIDTHS, num_classes)


@register_model
def resnet32(num_classes: int = 100) -> CifarResNet:
    """ResNet-32 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(32, _BASE_WIDTHS, num_classes)


@register_model
def resnet44(num_classes: int = 100) -> CifarResNet:
    """ResNet-44 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(44, _BASE_WIDTHS, num_classes)


@register_model
def resnet56(num_classes: int = 100) -> CifarResNet:
    """ResNet-56 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(56, _BASE_WIDTHS, num_classes)


@register_model
def resnet110(num_classes: int = 100) -> CifarResNet:
    """ResNet-110 for CIFAR (widths 16/16/32/64)."""
    return CifarResNet(110, _BASE_WIDTHS, num_classes)


@register_model
def resnet8x4(num_classes: int = 100) -> CifarResNet:
    """ResNet-8 with 4x wider stages (widths 32/64/128/256), the CRD benchmark student."""
    return CifarResNet(8, _X4_WIDTHS, num_classes)


@register_model
def resnet32x4(num_classes: int = 100) -> CifarResNet:
    """ResNet-32 with 4x wider stages (widths 32/64/128/256), the CRD benchmark teacher."""
    return CifarResNet(32, _X4_WIDTHS, num_classes)
