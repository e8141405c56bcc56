"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018) for CIFAR.

This is the CRD/RepDistiller ``mobile_half`` variant (expansion 6, width 0.5), registered as
``MobileNetV2`` like in the mdistiller zoo.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Pointwise expand, 3x3 depthwise, linear pointwise projection; residual when shapes allow.

    The expansion conv is kept even for ratio 1 (the reference does, and its checkpoints have it).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            # No activation after the projection: the "linear bottleneck".
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion, base output channels, repeats, first stride) per stage; the first stage never expands.
_STAGES: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


class CifarMobileNetV2(FeatureClassifier):
    """MobileNetV2 for 32x32 inputs: stride-2 stem, seven inverted-residual stages, 1x1 conv to 1280.

    Args:
        expand_ratio: Expansion of the inverted residuals (stages 2-7).
        width_mult: Channel multiplier of the stem and stages; the last conv keeps 1280 channels
            unless ``width_mult > 1``.
        num_classes: Number of output logits.
    """

    def __init__(self, expand_ratio: int = 6, width_mult: float = 0.5, num_classes: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, 3, stride=2)
        stages = []
        for ratio, base, repeats, stride in _STAGES:
            out_channels = int(base * width_mult)
            blocks = []
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, ratio or expand_ratio))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last_channels, 1, stride=1)
        # A Sequential only so that the key reads ``classifier.0.weight`` as in the checkpoints.
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.classifier[0]

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return the stem output and the outputs of stages 2, 3, 5 and 7, as the reference ``feats``.

        Stage outputs are linear bottlenecks, so only the stem output is post-ReLU (as in the reference).
        """
        f0 = self.conv1(x)
        f1 = self.blocks[1](self.blocks[0](f0))
        f2 = self.blocks[2](f1)
        f3 = self.blocks[4](self.blocks[3](f2))
        f4 = self.blocks[6](self.blocks[5](f3))
        return [f0, f1, f2, f3, f4]

    def _pre_pool(self, x: Tensor) -> Tensor:
        return self.conv2(x)


@register_model
def MobileNetV2(num_classes: int = 100) -> CifarMobileNetV2:
    """MobileNetV2 with expansion 6 and width 0.5 (the reference ``mobile_half``), a CRD benchmark student."""
    return CifarMobileNetV2(expand_ratio=6, width_mult=0.5, num_classes=num_classes)
