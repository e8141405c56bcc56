"""The reference CIFAR augmentation on whole uint8 batches, on whatever device the batch is on.

``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` + ``ToTensor()`` + ``Normalize(mean, std)`` applied
image by image through PIL costs a CPU worker per few thousand images per second; the same computation on a
uint8 batch already on the GPU is a handful of vectorized kernels with no host synchronization. The functions
here reproduce torchvision's result exactly (bit for bit in float32) for the same crop offsets and flips.
"""

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "UInt8ImageDataset",
    "augment_uint8_batch",
    "crop_flip_params_of_views",
    "keep_batch",
    "normalize_uint8_batch",
    "num_crop_flip_views",
    "random_crop_flip_params",
    "view_ids",
]


def normalize_uint8_batch(images: Tensor, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> Tensor:
    """``ToTensor`` + ``Normalize`` of a uint8 batch: ``(x / 255 - mean) / std`` per channel, in float32.

    The operations and their order are torchvision's (divide by 255, subtract, divide), so the result is
    identical to its per-image pipeline.

    Args:
        images: ``(B, C, H, W)`` uint8 images.
        mean: ``C`` channel means (on the images' device to avoid a copy per call).
        std: ``C`` channel standard deviations.

    Returns:
        ``(B, C, H, W)`` float32 tensor.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image batch (raw pixels), got dtype {images.dtype}.")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device)
    # Divide by a device tensor, not a Python scalar: CUDA turns division by a scalar into a multiplication by its
    # reciprocal, which can differ from torchvision's true division in the last bit.
    scale = _constant(255.0, images.device)
    return images.float().div(scale).sub(mean[:, None, None]).div(std[:, None, None])


# Per-batch constants, made once per device: each call would otherwise launch a kernel (a step at CIFAR sizes on a
# GPU is bound by per-operator costs). Callers never write to them.
@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> Tensor:
    return torch.arange(n, device=device)


@functools.lru_cache(maxsize=64)
def _constant(value: float, device: torch.device) -> Tensor:
    return torch.full((), value, device=device)


def augment_uint8_batch(
    images: Tensor,
    offsets: Tensor,
    flips: Tensor,
    mean: Tensor | Sequence[float],
    std: Tensor | Sequence[float],
    padding: int = 4,
) -> Tensor:
    """Zero-pad, crop, flip and normalize a uint8 batch with the given per-image parameters.

    Equal to torchvision's ``RandomCrop(size, padding=padding)`` (which pads the raw image with 0) followed by
    ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize`` when the crops start at ``offsets`` in the padded
    image and the images with ``flips`` set are mirrored. The crop size is the input size. Two gathers over the
    whole batch (rows, then columns): no loop over samples and no host synchronization.

    Args:
        images: ``(B, C, H, W)`` uint8 images.
        offsets: ``(B, 2)`` integer ``(top, left)`` corners of the crops in the padded ``H + 2p`` by ``W + 2p``
            image, each in ``0..2 * padding``.
        flips: ``(B,)`` bool, ``True`` to mirror the crop horizontally.
        mean: ``C`` channel means for the normalization.
        std: ``C`` channel standard deviations.
        padding: Zero border added on every side before cropping (4 in the reference).

    Returns:
        ``(B, C, H, W)`` float32 normalized crops.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            f"expected a (B, C, H, W) uint8 batch, got dtype {images.dtype} and shape {tuple(images.shape)}."
        )
    batch, channels, height, width = images.shape
    if offsets.shape != (batch, 2) or flips.shape != (batch,):
        raise ValueError(
            f"offsets must have shape ({batch}, 2) and flips ({batch},) for a batch of {batch}, "
            f"got {tuple(offsets.shape)} and {tuple(flips.shape)}."
        )
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p), zero border
    offsets = offsets.to(device=device, dtype=torch.long)
    rows = offsets[:, :1] + _arange(height, device)  # (B, H) source rows
    cols = offsets[:, 1:] + _arange(width, device)  # (B, W) source columns
    # A mirrored crop reads its columns right to left.
    cols = torch.where(flips.to(device=device, dtype=torch.bool)[:, None], cols.flip(1), cols)
    # Two gathers (rows, then columns) instead of one 4-D advanced index: same result, fewer index tensors.
    crops = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * padding))
    crops = crops.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))  # (B, C, H, W) uint8
    return normalize_uint8_batch(crops, mean, std)


def random_crop_flip_params(batch: int, padding: int = 4, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Draw crop corners uniformly on ``0..2 * padding`` and flips with probability 1/2, on ``device``.

    Args:
        batch: Number of images.
        padding: Zero border of the crop (corners range over ``0..2 * padding`` inclusive).
        device: Where to draw (the batch's device, so nothing crosses to the host).

    Returns:
        ``offsets`` ``(B, 2)`` int64 and ``flips`` ``(B,)`` bool.
    """
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), device=device)
    flips = torch.rand(batch, device=device) < 0.5
    return offsets, flips


def num_crop_flip_views(padding: int = 4) -> int:
    """How many distinct views the crop-and-flip augmentation has: ``(2p + 1)^2`` crop corners times 2 flips.

    With the reference padding 4 that is ``9 * 9 * 2 = 162`` views per image.
    """
    return (2 * padding + 1) ** 2 * 2


def view_ids(offsets: Tensor, flips: Tensor, padding: int = 4) -> Tensor:
    """The integer id in ``0 .. num_crop_flip_views(padding) - 1`` of each image's drawn view.

    ``id = (top * (2p + 1) + left) * 2 + flip``: views of one crop corner are adjacent, so a whole image's views
    are one contiguous run when stored in id order. :func:`crop_flip_params_of_views` is the inverse.

    Args:
        offsets: ``(B, 2)`` crop corners ``(top, left)``, each in ``0..2 * padding``.
        flips: ``(B,)`` bool.
        padding: the augmentation's zero border.

    Returns:
        ``(B,)`` int64 view ids, on the inputs' device.
    """
    side = 2 * padding + 1
    offsets = offsets.long()
    return (offsets[:, 0] * side + offsets[:, 1]) * 2 + flips.long()


def crop_flip_params_of_views(ids: Tensor, padding: int = 4) -> tuple[Tensor, Tensor]:
    """Crop corners and flips of view ids (the inverse of :func:`view_ids`).

    Returns:
        ``offsets`` ``(B, 2)`` int64 and ``flips`` ``(B,)`` bool, on the ids' device.

    Raises:
        ValueError: an id outside ``0 .. num_crop_flip_views(padding) - 1``.
    """
    ids = ids.long()
    count = num_crop_flip_views(padding)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= count):
        raise ValueError(f"view ids must lie in 0..{count - 1} for padding {padding}, got {ids.min()}..{ids.max()}.")
    side = 2 * padding + 1
    corner = ids // 2
    return torch.stack((corner // side, corner % side), dim=1), (ids % 2).bool()


def keep_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Collate function for :class:`UInt8ImageDataset`: the batch is already stacked."""
    return batch


class UInt8ImageDataset(Dataset):
    """Images kept in memory as one ``(N, C, H, W)`` uint8 tensor; a whole batch is one indexed gather.

    Map-style, so samplers (shuffling, Lightning's ``DistributedSampler`` under DDP) pick the indices as usual.
    The DataLoader hands a batch's indices to :meth:`__getitems__`, which returns the stacked batch at once;
    pair it with ``collate_fn=keep_batch`` (the data modules do).

    Args:
        images: ``(N, C, H, W)`` uint8 pixels.
        targets: ``(N,)`` int64 labels.
        with_indices: samples and batches carry a third element, the ``(B,)`` int64 dataset indices (what a teacher
            cache looks the samples up by).
    """

    # The loader's collate function (read by the data modules): batches come out of __getitems__ stacked.
    collate_fn = staticmethod(keep_batch)

    def __init__(self, images: Tensor, targets: Tensor, with_indices: bool = False) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"images must be an (N, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}.")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}.")
        self.images = images
        self.targets = targets.long()
        self.with_indices = bool(with_indices)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        if self.with_indices:
            return self.images[index], self.targets[index], torch.tensor(index, dtype=torch.long)
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        # index_select copies whole rows; advanced indexing (images[index]) copies byte by byte, ~100x slower on a CPU.
        batch = self.images.index_select(0, index), self.targets.index_select(0, index)
        return (*batch, index) if self.with_indices else batch
