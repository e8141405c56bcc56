"""MLKD's strong-view augmentation: RandAugment over the FixMatch-style op list, then Cutout (PIL images).

The reference (MLKD, Jin et al., CVPR 2023, CIFAR recipe) builds its strong view as the weak pipeline's crop and
flip, then ``n = 2`` operations drawn *with replacement* from the list below, each with a value drawn uniformly
from its range (the magnitude argument ``m`` of RandAugment is ignored), then Cutout, then ``ToTensor`` and
``Normalize``. Op list and ranges (values are PIL's arguments):

=============  ==================  =====================================================
op             value range         PIL call
=============  ==================  =====================================================
AutoContrast   (none)              ``ImageOps.autocontrast(img)``
Brightness     [0.05, 0.95]        ``ImageEnhance.Brightness(img).enhance(v)``
Color          [0.05, 0.95]        ``ImageEnhance.Color(img).enhance(v)``
Contrast       [0.05, 0.95]        ``ImageEnhance.Contrast(img).enhance(v)``
Equalize       (none)              ``ImageOps.equalize(img)``
Identity       (none)              ``img``
Posterize      [4, 8]              ``ImageOps.posterize(img, int(v))`` (bits kept)
Rotate         [-30, 30]           ``img.rotate(v)`` (degrees, counter-clockwise, black fill)
Sharpness      [0.05, 0.95]        ``ImageEnhance.Sharpness(img).enhance(v)``
ShearX         [-0.3, 0.3]         affine ``(1, v, 0, 0, 1, 0)``
ShearY         [-0.3, 0.3]         affine ``(1, 0, 0, v, 1, 0)``
Solarize       [0, 256]            ``ImageOps.solarize(img, v)`` (threshold)
TranslateX     [-0.3, 0.3]         affine ``(1, 0, v * width, 0, 1, 0)``
TranslateY     [-0.3, 0.3]         affine ``(1, 0, 0, 0, 1, v * height)``
=============  ==================  =====================================================

Random numbers come from torch's global generator, like torchvision's own random transforms, so
``seed_everything`` and the DataLoader's per-worker seeding make them reproducible.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageEnhance, ImageOps

__all__ = ["CUTOUT_FILL", "MLKD_OPS", "AugmentOp", "Cutout", "RandAugment", "TwoViews"]

# The reference's Cutout colour: CIFAR-100's mean pixel in 0..255.
CUTOUT_FILL: tuple[int, int, int] = (125, 123, 114)


@dataclass(frozen=True)
class AugmentOp:
    """One RandAugment operation: ``apply(image, value)`` with ``value`` drawn uniformly from ``[low, high]``.

    Attributes:
        name: The op's name in the reference list.
        apply: ``(PIL image, value) -> PIL image``.
        low: Lower end of the value range.
        high: Upper end of the value range.
    """

    name: str
    apply: Callable[[Image.Image, float], Image.Image]
    low: float
    high: float

    def __call__(self, image: Image.Image, value: float) -> Image.Image:
        return self.apply(image, value)


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f); nearest neighbour,
    # black outside the image (PIL's defaults, as the reference).
    return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def _auto_contrast(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.autocontrast(image)


def _brightness(image: Image.Image, value: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(value)


def _color(image: Image.Image, value: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(value)


def _contrast(image: Image.Image, value: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(value)


def _equalize(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.equalize(image)


def _identity(image: Image.Image, _: float) -> Image.Image:
    return image


def _posterize(image: Image.Image, value: float) -> Image.Image:
    # int() truncates, so the bits kept are 4..7 (8 only for a draw of exactly 8), as in the reference.
    return ImageOps.posterize(image, int(value))


def _rotate(image: Image.Image, value: float) -> Image.Image:
    return image.rotate(value)


def _sharpness(image: Image.Image, value: float) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(value)


def _shear_x(image: Image.Image, value: float) -> Image.Image:
    return _affine(image, (1, value, 0, 0, 1, 0))


def _shear_y(image: Image.Image, value: float) -> Image.Image:
    return _affine(image, (1, 0, 0, value, 1, 0))


def _solarize(image: Image.Image, value: float) -> Image.Image:
    return ImageOps.solarize(image, value)


def _translate_x(image: Image.Image, value: float) -> Image.Image:
    return _affine(image, (1, 0, value * image.size[0], 0, 1, 0))


def _translate_y(image: Image.Image, value: float) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, value * image.size[1]))


# The reference list, in its order; ops without a value carry the dummy range [0, 1].
MLKD_OPS: tuple[AugmentOp, ...] = (
    AugmentOp("AutoContrast", _auto_contrast, 0.0, 1.0),
    AugmentOp("Brightness", _brightness, 0.05, 0.95),
    AugmentOp("Color", _color, 0.05, 0.95),
    AugmentOp("Contrast", _contrast, 0.05, 0.95),
    AugmentOp("Equalize", _equalize, 0.0, 1.0),
    AugmentOp("Identity", _identity, 0.0, 1.0),
    AugmentOp("Posterize", _posterize, 4.0, 8.0),
    AugmentOp("Rotate", _rotate, -30.0, 30.0),
    AugmentOp("Sharpness", _sharpness, 0.05, 0.95),
    AugmentOp("ShearX", _shear_x, -0.3, 0.3),
    AugmentOp("ShearY", _shear_y, -0.3, 0.3),
    AugmentOp("Solarize", _solarize, 0.0, 256.0),
    AugmentOp("TranslateX", _translate_x, -0.3, 0.3),
    AugmentOp("TranslateY", _translate_y, -0.3, 0.3),
)


class RandAugment:
    """Apply ``num_ops`` operations drawn with replacement from ``ops``, each at a uniformly drawn value.

    This is the variant MLKD uses (from FixMatch): no magnitude schedule, the value of each op is uniform over
    the op's whole range.

    Args:
        num_ops: Operations applied per image (2 in the reference).
        ops: The operations to draw from; the reference list by default.

    Raises:
        ValueError: When ``num_ops`` is negative or ``ops`` is empty.
    """

    def __init__(self, num_ops: int = 2, ops: Sequence[AugmentOp] = MLKD_OPS) -> None:
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be an integer >= 0 (2 in the reference), got {num_ops!r}.")
        if len(ops) == 0:
            raise ValueError("ops must name at least one operation, got an empty list.")
        self.num_ops = num_ops
        self.ops = tuple(ops)

    def __call__(self, image: Image.Image) -> Image.Image:
        choices = torch.randint(len(self.ops), (self.num_ops,)).tolist()
        for index in choices:
            op = self.ops[index]
            value = op.low + (op.high - op.low) * torch.rand(()).item()
            image = op(image, value)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, ops=[{', '.join(op.name for op in self.ops)}])"


class Cutout:
    """Paint a square of side ``s * width``, ``s ~ U[0, max_fraction]``, centred at a uniform random pixel.

    The square is clipped at the image border (so it can be smaller than ``s * width``, as in the reference)
    and filled with ``fill``. The reference paints with ``ImageDraw.rectangle``, whose box includes its far
    edge, so its squares are one pixel wider; here the box is half-open, so the side never exceeds
    ``max_fraction * width`` and ``s = 0`` paints nothing.

    Args:
        max_fraction: Largest side as a fraction of the image width (0.5 in the reference).
        fill: RGB colour of the square (the reference's CIFAR mean pixel by default).

    Raises:
        ValueError: When ``max_fraction`` is outside ``[0, 1]``.
    """

    def __init__(self, max_fraction: float = 0.5, fill: tuple[int, int, int] = CUTOUT_FILL) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must lie in [0, 1] (0.5 in the reference), got {max_fraction!r}.")
        self.max_fraction = max_fraction
        self.fill = tuple(int(c) for c in fill)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = torch.rand(()).item() * self.max_fraction * width
        centre_x, centre_y = (torch.rand(2) * torch.tensor([width, height])).tolist()
        left, top = int(max(0.0, centre_x - side / 2)), int(max(0.0, centre_y - side / 2))
        right, bottom = int(min(width, left + side)), int(min(height, top + side))
        image = image.copy()  # never paint over the caller's image
        if right > left and bottom > top:
            fill = self.fill if image.mode == "RGB" else self.fill[0]
            image.paste(fill, (left, top, right, bottom))
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_fraction={self.max_fraction}, fill={self.fill})"


class TwoViews:
    """Turn one image into the ``(weak, strong)`` pair MLKD trains on; each view draws its own randomness.

    The one two-view wrapper of the package: the CIFAR / image-folder data modules wrap PIL transforms in it, the
    digits wrap tensor transforms (the weak view is drawn first, then the strong one).

    Args:
        weak: Transform of the weak view (the reference augmentation).
        strong: Transform of the strong view (the reference augmentation, RandAugment and Cutout).
    """

    def __init__(self, weak: Callable, strong: Callable) -> None:
        self.weak = weak
        self.strong = strong

    def __call__(self, image: Any) -> tuple:
        return self.weak(image), self.strong(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weak={self.weak!r}, strong={self.strong!r})"
