"""ShuffleNet (Zhang et al., "ShuffleNet: An Extremely Efficient CNN for Mobile Devices", CVPR 2018) for CIFAR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier
from lightning_kd.models.cifar._shuffle import channel_shuffle


class ShuffleUnit(nn.Module):
    """Grouped 1x1 conv, channel shuffle, 3x3 depthwise, grouped 1x1 conv.

    With stride 2 the shortcut is a 3x3 average pool and the branch output is concatenated to it
    (so the branch produces ``out_channels - in_channels`` channels); otherwise it is added.

    Args:
        in_channels: Input channels.
        branch_channels: Output channels of the residual branch.
        stride: 1 or 2.
        groups: Groups of the 1x1 convs; the first unit after the 24-channel stem uses 1 group for
            its first conv because 24 input channels are too few to split (as in the reference).
    """

    def __init__(self, in_channels: int, branch_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = branch_channels // 4
        self.stride = stride
        self.first_groups = 1 if in_channels == 24 else groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class CifarShuffleNetV1(FeatureClassifier):
    """ShuffleNet v1 for 32x32 inputs: a 1x1 stem to 24 channels and three stride-2 stages.

    Args:
        stage_channels: Output channels of the three stages.
        stage_blocks: Units per stage.
        groups: Groups of the 1x1 convs.
        num_classes: Number of output logits.
    """

    def __init__(
        self,
        stage_channels: tuple[int, int, int] = (240, 480, 960),
        stage_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages = []
        for out_channels, num_blocks in zip(stage_channels, stage_blocks, strict=True):
            # The first unit concatenates its input, so its branch only adds the missing channels.
            units = [ShuffleUnit(in_channels, out_channels - in_channels, 2, groups)]
            units += [ShuffleUnit(out_channels, out_channels, 1, groups) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(stage_channels[2], num_classes)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.linear

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return ``[stem, layer1, layer2, layer3]`` outputs (after ReLU), as the reference ``feats``."""
        return self._stem_and_stages(x, (self.layer1, self.layer2, self.layer3))


@register_model
def ShuffleV1(num_classes: int = 100) -> CifarShuffleNetV1:
    """ShuffleNet v1, 3 groups, stages 240/480/960 with 4/8/4 units, a CRD benchmark student."""
    return CifarShuffleNetV1((240, 480, 960), (4, 8, 4), groups=3, num_classes=num_classes)
