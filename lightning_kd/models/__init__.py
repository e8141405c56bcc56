"""Model zoo: the reference CIFAR architectures, MobileNetV1, and torchvision/timm models by prefix."""

from lightning_kd.models import cifar as _cifar  # noqa: F401  (registers the CIFAR zoo)
from lightning_kd.models import mobilenetv1 as _mobilenetv1  # noqa: F401  (registers MobileNetV1)
from lightning_kd.models._registry import list_models, register_model
from lightning_kd.models.factory import create_model

__all__ = ["create_model", "list_models", "register_model"]
