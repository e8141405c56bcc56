"""Data modules: CIFAR-100, ImageNet, users' ImageFolder trees and the embedded digits demo."""

from lightning_kd.data.cifar100 import CIFAR100DataModule
from lightning_kd.data.digits import DigitsDataModule
from lightning_kd.data.imagefolder import ImageFolderDataModule
from lightning_kd.data.imagenet import ImageNetDataModule

__all__ = ["CIFAR100DataModule", "DigitsDataModule", "ImageFolderDataModule", "ImageNetDataModule"]
