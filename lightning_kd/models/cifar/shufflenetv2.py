"""ShuffleNet V2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Design", ECCV 2018) for CIFAR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier
from lightning_kd.models.cifar._shuffle import channel_shuffle


class SplitUnit(nn.Module):
    """Stride-1 unit: the first half of the channels passes through, the second half is transformed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        keep, branch = x[:, :half], x[:, half:]
        branch = F.relu(self.bn1(self.conv1(branch)))
        branch = self.bn2(self.conv2(branch))
        branch = F.relu(self.bn3(self.conv3(branch)))
        return channel_shuffle(torch.cat([keep, branch], 1), 2)


class DownUnit(nn.Module):
    """Stride-2 unit: two branches over the full input, each producing half of ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # Left branch: depthwise 3x3 (stride 2), then 1x1.
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # Right branch: 1x1, depthwise 3x3 (stride 2), 1x1.
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class CifarShuffleNetV2(FeatureClassifier):
    """ShuffleNet V2 for 32x32 inputs: a 1x1 stem, three stages (down unit + split units), a 1x1 conv.

    Args:
        stage_channels: Output channels of the three stages and of the final 1x1 conv.
        stage_blocks: Split units per stage (each stage also starts with one down unit).
        num_classes: Number of output logits.
    """

    def __init__(
        self,
        stage_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        stage_blocks: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages = []
        for out_channels, num_blocks in zip(stage_channels[:3], stage_blocks, strict=True):
            units = [DownUnit(in_channels, out_channels)] + [SplitUnit(out_channels) for _ in range(num_blocks)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(in_channels, stage_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stage_channels[3])
        self.linear = nn.Linear(stage_channels[3], num_classes)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.linear

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return ``[stem, layer1, layer2, layer3]`` outputs, as the reference ``feats``."""
        return self._stem_and_stages(x, (self.layer1, self.layer2, self.layer3))

    def _pre_pool(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(x)))


@register_model
def ShuffleV2(num_classes: int = 100) -> CifarShuffleNetV2:
    """ShuffleNet V2 1x (stages 116/232/464, 3/7/3 split units, 1024-channel head), a CRD benchmark student."""
    return CifarShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes=num_classes)
