"""Normalization constants and the reference transform pipelines, kept in one place.

The CIFAR-100 constants are the reference recipe's values (used as given, never recomputed from the data);
the ImageNet constants are the usual torchvision ones.
"""

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
]

Triple = tuple[float, float, float]

CIFAR100_MEAN: Triple = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: Triple = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


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
