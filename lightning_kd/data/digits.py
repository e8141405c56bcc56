"""The embedded demo dataset: scikit-learn's handwritten digits, shaped like CIFAR images."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from lightning_kd.data.base import BaseDataModule, check_positive_int
from lightning_kd.data.randaugment import TwoViews

__all__ = ["DigitsDataModule"]


class DigitsDataModule(BaseDataModule):
    """The 1,797 real 8x8 handwritten digits bundled with scikit-learn (10 classes), no download needed.

    Each image is scaled to [0, 1], upsampled bilinearly to ``image_size`` and repeated to 3 channels, so the
    CIFAR model zoo runs on it unchanged. The train/validation split is stratified by class and fixed by
    ``seed``; validation and test both use the validation split. Normalization statistics come from the
    training split only (one value, shared by the 3 identical channels). All tensors are computed once, so
    an epoch costs only the model's time. There is no augmentation by default: flips would turn digits into
    other shapes.

    With ``two_views=True`` (for MLKD) training samples are ``((weak, strong), target)``. The digits are tensors,
    not PIL images, so the strong view is not RandAugment: it is a random shift of up to
    ``max(max_shift, image_size // 8)`` pixels followed by Cutout (a square of side uniform in
    ``[0, 0.5] * image_size``, centred at a uniform random pixel, clipped at the border), both filled with the
    background value. The weak view is the usual training sample.

    Args:
        batch_size: Samples per training batch.
        val_fraction: Fraction of the images held out for validation/test, strictly between 0 and 1.
        seed: Seed of the stratified split; the same seed always gives the same split.
        num_workers: Worker processes per dataloader; 0 (the default) is fastest for this tiny dataset.
        image_size: Side of the square images after upsampling from 8x8.
        max_shift: Optional light augmentation: shift training images by up to this many pixels in each
            direction, filling with the background value. 0 (the default) disables it.
        drop_last: Drop the last incomplete training batch.
        val_batch_size: Samples per validation/test batch; ``None`` uses ``batch_size``.
        two_views: Training samples become ``((weak, strong), target)`` (see above).
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        image_size: int = 32,
        max_shift: int = 0,
        drop_last: bool = False,
        val_batch_size: int | None = None,
        two_views: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, drop_last=drop_last, val_batch_size=val_batch_size)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1 (e.g. 0.2), got {val_fraction!r}.")
        check_positive_int("image_size", image_size)
        if image_size < 8:
            raise ValueError(f"image_size must be at least the digits' native 8 pixels, got {image_size}.")
        if not isinstance(max_shift, int) or not 0 <= max_shift < image_size:
            raise ValueError(f"max_shift must be an integer in [0, image_size), e.g. 0 or 2, got {max_shift!r}.")
        self.val_fraction = val_fraction
        self.seed = seed
        self.image_size = image_size
        self.max_shift = max_shift
        self.two_views = two_views
        self.num_classes = 10
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self._tensors: dict[str, Tensor] | None = None
        self._stats: tuple[float, float] | None = None

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the training split (after scaling to [0, 1] and upsampling)."""
        mean, _ = self._load()
        return (mean, mean, mean)

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the training split."""
        _, std = self._load()
        return (std, std, std)

    @override
    def prepare_data(self) -> None:
        """Nothing to download: the digits ship with scikit-learn."""

    @override
    def setup(self, stage: str | None = None) -> None:
        """Build the normalized tensors once and wrap them in datasets.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or ``None`` for all.
        """
        self._load()
        assert self._tensors is not None
        x_train, y_train = self._tensors["x_train"], self._tensors["y_train"]
        if stage in (None, "fit"):
            fill = -self._stats[0] / self._stats[1]  # a zero pixel after normalization
            if self.two_views:
                # weak: the shift; strong: a larger shift and Cutout (the CIFAR two views, on tensors)
                strong_shift = max(self.max_shift, self.image_size // 8)
                views = TwoViews(_Shift(self.max_shift, fill), _ShiftCutout(strong_shift, fill))
                self.train_set = _Transformed(x_train, y_train, views)
            elif self.max_shift > 0:
                self.train_set = _Transformed(x_train, y_train, _Shift(self.max_shift, fill))
            else:
                self.train_set = TensorDataset(x_train, y_train)
        self.val_set = TensorDataset(self._tensors["x_val"], self._tensors["y_val"])
        self.test_set = self.val_set

    def _load(self) -> tuple[float, float]:
        """Load, split, upsample and normalize the digits on first use; return the (mean, std) statistics."""
        if self._stats is not None:
            return self._stats
        # imported here: scikit-learn costs about 0.3 s, which every CLI start would pay otherwise
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        labels = digits.target
        self.train_indices, self.val_indices = train_test_split(
            np.arange(len(labels)), test_size=self.val_fraction, stratify=labels, random_state=self.seed
        )
        images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
        images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        train = images[torch.from_numpy(self.train_indices)]
        mean, std = train.mean().item(), train.std(correction=0).item()
        images = ((images - mean) / std).repeat(1, 3, 1, 1)  # (N, 3, S, S)
        targets = torch.from_numpy(labels).long()
        train_idx, val_idx = torch.from_numpy(self.train_indices), torch.from_numpy(self.val_indices)
        self._tensors = {
            "x_train": images[train_idx],
            "y_train": targets[train_idx],
            "x_val": images[val_idx],
            "y_val": targets[val_idx],
        }
        self._stats = (mean, std)
        return self._stats


def _shift(image: Tensor, max_shift: int, fill: float) -> Tensor:
    """Shift a ``(C, H, W)`` image by a random whole number of pixels in ``-max_shift..max_shift`` per axis."""
    if max_shift == 0:
        return image
    height, width = image.shape[-2:]
    top, left = (torch.randint(0, 2 * max_shift + 1, (2,))).tolist()
    padded = F.pad(image, (max_shift,) * 4, value=fill)
    return padded[:, top : top + height, left : left + width]


def _cutout(image: Tensor, fill: float, max_fraction: float = 0.5) -> Tensor:
    """Fill a square of side uniform in ``[0, max_fraction] * width``, centred at a random pixel, clipped."""
    height, width = image.shape[-2:]
    side = torch.rand(()).item() * max_fraction * width
    centre_y, centre_x = (torch.rand(2) * torch.tensor([height, width])).tolist()
    top, left = int(max(0.0, centre_y - side / 2)), int(max(0.0, centre_x - side / 2))
    image = image.clone()
    image[:, top : int(min(height, top + side)), left : int(min(width, left + side))] = fill
    return image


class _Shift:
    """Shift a ``(C, H, W)`` tensor image by up to ``max_shift`` pixels per axis (see :func:`_shift`)."""

    def __init__(self, max_shift: int, fill: float) -> None:
        self.max_shift = max_shift
        self.fill = fill

    def __call__(self, image: Tensor) -> Tensor:
        return _shift(image, self.max_shift, self.fill)


class _ShiftCutout(_Shift):
    """:class:`_Shift`, then Cutout (:func:`_cutout`): the digits' strong view."""

    def __call__(self, image: Tensor) -> Tensor:
        return _cutout(_shift(image, self.max_shift, self.fill), self.fill)


class _Transformed(Dataset):
    """Precomputed ``(image, target)`` tensors with a per-sample transform of the image."""

    def __init__(self, images: Tensor, targets: Tensor, transform: Callable[[Tensor], Any]) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        return self.transform(self.images[index]), self.targets[index]
