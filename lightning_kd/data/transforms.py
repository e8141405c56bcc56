"""Normalization constants and the reference transform pipelines, kept in one place.

The CIFAR-100 constants are the reference recipe's values (used as given, never recomputed from the data);
the ImageNet constants are the usual torchvision ones.
"""

import importlib.util

from PIL import Image, ImageOps
from torchvision import transforms as T

from lightning_kd.data.randaugment import Cutout, RandAugment

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar_eval_transform",
    "cifar_strong_transform",
    "cifar_train_transform",
    "imagenet_eval_transform",
    "imagenet_strong_transform",
    "imagenet_train_transform",
    "posterize_keeping_zero_bits",
    "pycls_eval_transform",
    "pycls_train_transform",
    "require_timm",
]

Triple = tuple[float, float, float]

CIFAR100_MEAN: Triple = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: Triple = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)

# The ViT table's training augmentation (docs/sources.md §7.2): timm's RandAugment policy string, and the random
# erasing probability of the reference's create_transform call.
PYCLS_RANDAUGMENT = "rand-m9-mstd0.5-inc1"
PYCLS_ERASING_PROBABILITY = 0.25


def cifar_train_transform(mean: Triple = CIFAR100_MEAN, std: Triple = CIFAR100_STD) -> T.Compose:
    """Reference CIFAR training augmentation: zero-padded random crop, horizontal flip, normalization.

    Args:
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a 32x32 PIL image to a normalized ``3x32x32`` float tensor.
    """
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def cifar_strong_transform(mean: Triple = CIFAR100_MEAN, std: Triple = CIFAR100_STD) -> T.Compose:
    """MLKD's strong CIFAR view: the reference crop and flip, RandAugment (2 ops), Cutout, normalization.

    The crop and flip are drawn independently of the weak view's (the reference runs two separate pipelines).
    See :mod:`lightning_kd.data.randaugment` for the op list and value ranges.

    Args:
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a 32x32 PIL image to a normalized ``3x32x32`` float tensor.
    """
    return T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            RandAugment(num_ops=2),
            Cutout(max_fraction=0.5),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def cifar_eval_transform(mean: Triple = CIFAR100_MEAN, std: Triple = CIFAR100_STD) -> T.Compose:
    """Reference CIFAR evaluation transform: tensor conversion and normalization only.

    Args:
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized float tensor.
    """
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def imagenet_train_transform(
    image_size: int = 224, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD
) -> T.Compose:
    """Reference ImageNet training augmentation: random resized crop and horizontal flip.

    Args:
        image_size: Side of the square crop.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized ``3 x image_size x image_size`` float tensor.
    """
    return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def imagenet_strong_transform(
    image_size: int = 224, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD
) -> T.Compose:
    """MLKD's strong view for ImageFolder data: random resized crop, flip, RandAugment (2 ops), Cutout.

    The same strong-view recipe as CIFAR (:func:`cifar_strong_transform`) after the ImageNet crop; Cutout keeps
    the reference's fill colour (125, 123, 114).

    Args:
        image_size: Side of the square crop.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized ``3 x image_size x image_size`` float tensor.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(image_size),
            T.RandomHorizontalFlip(),
            RandAugment(num_ops=2),
            Cutout(max_fraction=0.5),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def imagenet_eval_transform(
    image_size: int = 224, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD
) -> T.Compose:
    """Reference ImageNet evaluation transform: resize the short side, then center crop.

    The short side is resized to ``image_size * 256 / 224`` (256 for the standard 224 crop).

    Args:
        image_size: Side of the square center crop.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized ``3 x image_size x image_size`` float tensor.
    """
    resize = int(image_size * 256 / 224)
    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), T.Normalize(mean, std)])


def pycls_train_transform(image_size: int = 224, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD) -> T.Compose:
    """The ViT table's "strong" training augmentation (the paper's ``tiny-transformers`` code, docs/sources.md §7.2).

    In order, on a PIL image of any size (CIFAR's 32x32):

    1. random resized crop: a region of 8-100 % of the image's area and aspect ratio in [3/4, 4/3] (log-uniform),
       resized to ``image_size`` with bicubic interpolation (timm's ``RandomResizedCropAndInterpolation``);
    2. horizontal flip with probability 1/2;
    3. timm's RandAugment ``rand-m9-mstd0.5-inc1``: 2 ops drawn from its 15 "increasing" ops, each applied with
       probability 1/2 at magnitude 9 with Gaussian noise of std 0.5 per draw (translations by up to
       0.45 x magnitude / 10 of the side); the fill colour is ``mean`` in 0-255, resampling bicubic;
    4. tensor conversion and normalization with ``mean`` / ``std``;
    5. random erasing with probability 0.25: one rectangle of 2-33 % of the area, filled with per-pixel normal noise
       (timm's ``RandomErasing``, ``mode="pixel"``).

    The colour jitter the reference passes (0.4) is inactive, as in timm whenever RandAugment is on. The reference
    builds these steps with ``timm.data.create_transform``; this function composes the same timm parts (a test
    checks the two give identical tensors under one seed), with one repair: RandAugment's "PosterizeIncreasing"
    keeps 4 down to 0 bits, and at a magnitude draw of 10 (clipped noise, about 2 % of its draws) asks for 0 bits,
    which recent Pillow refuses with a ``ValueError`` (13.0 does); :func:`posterize_keeping_zero_bits` returns the
    black image that Pillow's mask formula gives for 0 bits. Steps 1 and 3 draw from Python's ``random``, step 3's op
    choice from NumPy, steps 2 and 5 from torch (and ``random``).

    Args:
        image_size: Side of the square output in pixels.
        mean: Per-channel mean subtracted after scaling to [0, 1] (the reference uses the ImageNet constants).
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized ``3 x image_size x image_size`` float tensor.

    Raises:
        ImportError: When timm is not installed.
    """
    require_timm("pycls_train_transform")
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation

    # the settings timm derives from the output size and the mean for RandAugment
    randaugment_settings = {
        "translate_const": int(image_size * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in mean),
        "interpolation": Image.BICUBIC,
    }
    randaugment = rand_augment_transform(PYCLS_RANDAUGMENT, randaugment_settings)
    for op in randaugment.ops:
        if op.name == "PosterizeIncreasing":
            op.aug_fn = posterize_keeping_zero_bits
    return T.Compose(
        [
            RandomResizedCropAndInterpolation(
                image_size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation="bicubic"
            ),
            T.RandomHorizontalFlip(p=0.5),
            randaugment,
            T.ToTensor(),
            T.Normalize(mean, std),
            RandomErasing(PYCLS_ERASING_PROBABILITY, mode="pixel", max_count=1, num_splits=0, device="cpu"),
        ]
    )


def posterize_keeping_zero_bits(image: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """timm's RandAugment posterize op, defined for 0 bits too: keeping no bit of a channel makes it 0 (black).

    Pillow's ``ImageOps.posterize`` masks each channel with ``~(2 ** (8 - bits) - 1)``, which for ``bits=0`` makes every
    value 0; recent Pillow raises for 0 bits instead. 8 bits or more return the image as is.
    """
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits_to_keep)


def pycls_eval_transform(image_size: int = 224, mean: Triple = IMAGENET_MEAN, std: Triple = IMAGENET_STD) -> T.Compose:
    """The ViT table's evaluation transform: resize to ``image_size`` square (bilinear), tensor, normalization.

    No crop: the whole 32x32 test image is scaled up (docs/sources.md §7.2). At ``image_size=32`` the resize leaves
    a CIFAR image unchanged.

    Args:
        image_size: Side of the square output in pixels.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        A transform from a PIL image to a normalized ``3 x image_size x image_size`` float tensor.
    """
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(mean, std)])


def require_timm(what: str) -> None:
    """Raise an ``ImportError`` naming ``what`` and the install command when timm is not installed."""
    if importlib.util.find_spec("timm") is None:
        raise ImportError(
            f"{what} needs timm (its RandAugment, crop and erasing transforms are the reference's): "
            'pip install "lightning-kd[timm]".'
        )
