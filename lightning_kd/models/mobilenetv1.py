"""MobileNetV1 (Howard et al., "MobileNets: Efficient CNNs for Mobile Vision Applications", 2017) for ImageNet.

The ImageNet student of the paper's tables (mdistiller's ``models/imagenet/mobilenetv1.py``, listed
there under the name ``MobileNetV2``). The layer layout keeps the reference ``model.<i>.<j>`` keys so its
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier

# (output channels, stride) of the 13 depthwise-separable layers after the 32-channel stem.
_LAYERS: list[tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]
# Indices in ``model`` whose outputs are the reference feature maps (strides 4, 8, 16, 32).
_FEATURE_INDICES = (3, 5, 11, 13)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImageNetMobileNetV1(FeatureClassifier):
    """MobileNetV1 (width 1.0): a stride-2 3x3 stem, 13 depthwise-separable layers, global pooling, linear.

    The reference ends with ``AvgPool2d(7)``, i.e. global pooling at 224 px; global average pooling
    gives the same logits there and also accepts smaller inputs.

    Args:
        num_classes: Number of output logits.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers = [_conv_bn_relu(3, 32, stride=2)]
        channels = 32
        for out_channels, stride in _LAYERS:
            layers.append(_separable(channels, out_channels, stride))
            channels = out_channels
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.fc

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return the post-ReLU outputs at strides 4, 8, 16 and 32, as the reference ``feats``."""
        feats = []
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in _FEATURE_INDICES:
                feats.append(x)
        return feats


@register_model
def MobileNetV1(num_classes: int = 1000) -> ImageNetMobileNetV1:
    """MobileNetV1 for ImageNet (4,231,976 parameters at 1000 classes), the paper's ImageNet student."""
    return ImageNetMobileNetV1(num_classes)
