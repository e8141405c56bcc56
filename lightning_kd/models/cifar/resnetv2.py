"""ImageNet-style ResNets (He et al., CVPR 2016) adapted to CIFAR: 3x3 stem, no max-pool, four stages.

These are the CRD/RepDistiller ``resnetv2`` models registered as ``ResNet18`` and ``ResNet50``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # An empty Sequential is the identity and has no state, matching the reference key layout.
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, and a shortcut (ResNet-50+ block)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetV2(FeatureClassifier):
    """Four-stage ResNet (64/128/256/512 planes, strides 1/2/2/2) on a 3x3 stride-1 stem.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        num_blocks: Blocks in each of the four stages.
        num_classes: Number of output logits.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, count, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True):
            blocks = []
            for i in range(count):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.linear

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return ``[stem, layer1, ..., layer4]`` outputs (after ReLU), as the reference ``feats``."""
        return self._stem_and_stages(x, (self.layer1, self.layer2, self.layer3, self.layer4))


@register_model
def ResNet18(num_classes: int = 100) -> CifarResNetV2:
    """ResNet-18 with a CIFAR stem (3x3 conv, no max-pool)."""
    return CifarResNetV2(BasicBlock, (2, 2, 2, 2), num_classes)


@register_model
def ResNet50(num_classes: int = 100) -> CifarResNetV2:
    """ResNet-50 with a CIFAR stem (3x3 conv, no max-pool), a CRD benchmark teacher."""
    return CifarResNetV2(Bottleneck, (3, 4, 6, 3), num_classes)
