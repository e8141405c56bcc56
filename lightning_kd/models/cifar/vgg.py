"""VGG with batch norm (Simonyan & Zisserman, "Very Deep Convolutional Networks", ICLR 2015) for CIFAR."""

from __future__ import annotations

import math

import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models._registry import register_model
from lightning_kd.models.cifar._base import FeatureClassifier

# Output channels of the 3x3 convs in each of the five blocks (a max-pool separates blocks).
_CONFIGS: dict[str, list[list[int]]] = {
    "S": [[64], [128], [256], [512], [512]],
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_block(in_channels: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    # Like the reference, drop the block's trailing ReLU: it is applied in ``forward_intermediates`` so that
    # the pre-activation output stays reachable (e.g. for feature distillation hooks on the Sequential).
    return nn.Sequential(*layers[:-1])


class CifarVGG(FeatureClassifier):
    """VGG-BN for 32x32 (or 64x64) inputs: five conv blocks, global average pooling, one linear layer.

    At 32 px the fourth max-pool is skipped (block4 runs at 4x4); it is applied only to 64 px inputs,
    which is what the reference does.

    Args:
        config: One of ``"S"`` (VGG-8), ``"A"`` (11), ``"B"`` (13), ``"D"`` (16), ``"E"`` (19).
        num_classes: Number of output logits.

    Raises:
        ValueError: If ``config`` is unknown.
    """

    def __init__(self, config: str, num_classes: int = 100) -> None:
        super().__init__()
        if config not in _CONFIGS:
            raise ValueError(f"Unknown VGG config {config!r}; expected one of {sorted(_CONFIGS)}.")
        self.num_classes = num_classes
        cfg = _CONFIGS[config]
        self.block0 = _make_block(3, cfg[0])
        self.block1 = _make_block(cfg[0][-1], cfg[1])
        self.block2 = _make_block(cfg[1][-1], cfg[2])
        self.block3 = _make_block(cfg[2][-1], cfg[3])
        self.block4 = _make_block(cfg[3][-1], cfg[4])
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        return self.classifier

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return the five block outputs (after ReLU), as the reference ``feats``."""
        f0 = F.relu(self.block0(x))
        f1 = F.relu(self.block1(F.max_pool2d(f0, 2)))
        f2 = F.relu(self.block2(F.max_pool2d(f1, 2)))
        f3 = F.relu(self.block3(F.max_pool2d(f2, 2)))
        f4 = F.relu(self.block4(_pool_if_64px(f3, x)))
        return [f0, f1, f2, f3, f4]


def _pool_if_64px(features: Tensor, image: Tensor) -> Tensor:
    """The reference pools before the last block only for 64x64 inputs (32x32 CIFAR images keep 2x2 maps)."""
    return F.max_pool2d(features, 2) if image.shape[2] == 64 else features


# a leaf call for torch.fx (fold_batchnorm traces the network): the branch reads the input's size
torch.fx.wrap("_pool_if_64px")


@register_model
def vgg8(num_classes: int = 100) -> CifarVGG:
    """VGG-8 with batch norm (one conv per block)."""
    return CifarVGG("S", num_classes)


@register_model
def vgg11(num_classes: int = 100) -> CifarVGG:
    """VGG-11 with batch norm."""
    return CifarVGG("A", num_classes)


@register_model
def vgg13(num_classes: int = 100) -> CifarVGG:
    """VGG-13 with batch norm, the CRD benchmark teacher."""
    return CifarVGG("B", num_classes)


@register_model
def vgg16(num_classes: int = 100) -> CifarVGG:
    """VGG-16 with batch norm."""
    return CifarVGG("D", num_classes)


@register_model
def vgg19(num_classes: int = 100) -> CifarVGG:
    """VGG-19 with batch norm."""
    return CifarVGG("E", num_classes)
