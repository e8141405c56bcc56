"""Reference CIFAR-100 architectures (RepDistiller / mdistiller zoo); importing registers all 23 of them."""

from lightning_kd.models.cifar.mobilenetv2 import CifarMobileNetV2
from lightning_kd.models.cifar.resnet import CifarResNet
from lightning_kd.models.cifar.resnetv2 import CifarResNetV2
from lightning_kd.models.cifar.shufflenetv1 import CifarShuffleNetV1
from lightning_kd.models.cifar.shufflenetv2 import CifarShuffleNetV2
from lightning_kd.models.cifar.vgg import CifarVGG
from lightning_kd.models.cifar.wrn import WideResNet

__all__ = [
    "CifarMobileNetV2",
    "CifarResNet",
    "CifarResNetV2",
    "CifarShuffleNetV1",
    "CifarShuffleNetV2",
    "CifarVGG",
    "WideResNet",
]
