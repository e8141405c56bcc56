"""CIFAR100DataModule(augmentation=..., image_size=...): the ViT table's pipeline beside the unchanged default.

Fake CIFAR-100 files in the real on-disk format; the reference pipeline is rebuilt here from timm's own
``create_transform`` with the arguments of the paper's ``tiny-transformers/pycls/datasets/transforms.py``.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lightning_kd.data import CIFAR100DataModule
from lightning_kd.data.transforms import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from tests.helpers.fake_data import write_fake_cifar100

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar_pycls")
    write_fake_cifar100(root, n_train=12, n_test=6)
    return root


def _module(root: Path, **kwargs) -> CIFAR100DataModule:
    data = CIFAR100DataModule(str(root), batch_size=4, num_workers=0, verify_checksums=False, **kwargs)
    data.setup("fit")
    return data


def _seed(seed: int) -> None:
    # the pipelines draw from Python's random (crops, RandAugment's magnitudes), NumPy (RandAugment's op choice) and
    # torch (flip, erasing noise, the loader's shuffle)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _first_batch(data: CIFAR100DataModule, seed: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    _seed(seed)
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    return next(iter(loader))


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
@pytest.mark.parametrize("image_size", [224, 32])
def test_pycls_batches_have_the_requested_size_and_imagenet_normalization(cifar, image_size):
    data = _module(cifar, augmentation="pycls", image_size=image_size)
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    for split in ("train", "val"):
        images, targets = _first_batch(data, 0, split)
        assert images.shape == (4, 3, image_size, image_size), split
        assert images.dtype == torch.float32
        assert targets.dtype == torch.int64
        assert torch.isfinite(images).all()


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
def test_pycls_training_batches_are_deterministic_under_a_seed(cifar):
    first = _first_batch(_module(cifar, augmentation="pycls", image_size=224), seed=7)
    again = _first_batch(_module(cifar, augmentation="pycls", image_size=224), seed=7)
    other = _first_batch(_module(cifar, augmentation="pycls", image_size=224), seed=8)
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
def test_pycls_training_transform_is_the_reference_create_transform(cifar):
    """The same tensors as timm's create_transform called as the reference calls it, image by image and seed by seed."""
    from timm.data import create_transform

    primary, secondary, final = create_transform(
        input_size=(224, 224),
        is_training=True,
        color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        interpolation="bicubic",
        separate=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    reference = T.Compose([primary, secondary, final])
    dataset = _module(cifar, augmentation="pycls", image_size=224).train_set
    for index in range(6):
        image = Image.fromarray(dataset.data[index])
        for seed in range(5):
            _seed(seed)
            ours = dataset.transform(image)
            _seed(seed)
            assert torch.equal(ours, reference(image)), (index, seed)


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
def test_pycls_evaluation_resizes_the_whole_image_bilinearly(cifar):
    data = _module(cifar, augmentation="pycls", image_size=224)
    images, _ = _first_batch(data, 0, "val")
    raw = data.val_set.data[0]  # (32, 32, 3) uint8
    resized = np.asarray(Image.fromarray(raw).resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
    mean, std = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)
    expected = torch.from_numpy((resized - mean) / std).permute(2, 0, 1)
    torch.testing.assert_close(images[0], expected, atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
def test_default_pipeline_is_unchanged(cifar):
    """No new option given, or the defaults given explicitly: the reference crop-and-flip pipeline at 32 px."""
    implicit = _module(cifar)
    explicit = _module(cifar, augmentation="reference", image_size=32)
    assert (implicit.mean, implicit.std) == (CIFAR100_MEAN, CIFAR100_STD)
    assert (implicit.augmentation, implicit.image_size) == ("reference", 32)
    hand_built = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    )
    first, again = _first_batch(implicit, seed=3), _first_batch(explicit, seed=3)
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    for index in range(4):
        image = Image.fromarray(implicit.train_set.data[index])
        for seed in range(3):
            _seed(seed)
            ours = implicit.train_set.transform(image)
            _seed(seed)
            assert torch.equal(ours, hand_built(image)), (index, seed)
    val_images, _ = _first_batch(implicit, 0, "val")
    expected = T.Normalize(CIFAR100_MEAN, CIFAR100_STD)(T.ToTensor()(implicit.val_set.data[0]))
    assert torch.equal(val_images[0], expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"augmentation": "randaugment"}, r"Unknown augmentation 'randaugment': use 'reference' .* or 'pycls'"),
        ({"image_size": 224}, r"image_size=224 needs augmentation='pycls'.*--data.init_args.augmentation pycls"),
        ({"augmentation": "pycls", "image_size": 16}, r"image_size=16 is below CIFAR's native 32 pixels"),
        ({"augmentation": "pycls", "image_size": 0}, r"image_size must be a positive integer, got 0"),
        ({"augmentation": "pycls", "image_size": 224, "two_views": True}, r"cannot be combined with two_views=True"),
        (
            {"augmentation": "pycls", "image_size": 224, "device_augment": True},
            r"cannot be combined with device_augment=True.*Set device_augment false",
        ),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        CIFAR100DataModule(str(tmp_path), **kwargs)


def test_pycls_without_timm_says_what_to_install(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"augmentation='pycls'\) needs timm.*lightning-kd\[timm\]"):
        CIFAR100DataModule(str(tmp_path), augmentation="pycls", image_size=224)
    CIFAR100DataModule(str(tmp_path))  # the default pipeline needs no timm


def test_posterize_to_zero_bits_gives_black_instead_of_pillows_error():
    """RandAugment's PosterizeIncreasing keeps 0 bits at a clipped magnitude draw of 10; recent Pillow refuses that."""
    from PIL import ImageOps
    from timm.data.auto_augment import posterize as timm_posterize

    from lightning_kd.data.transforms import posterize_keeping_zero_bits, pycls_train_transform

    image = Image.fromarray(np.arange(3 * 16 * 16, dtype=np.uint8).reshape(16, 16, 3))
    assert np.asarray(posterize_keeping_zero_bits(image, 0)).max() == 0
    assert posterize_keeping_zero_bits(image, 0).mode == image.mode
    for bits in (1, 4):  # 1-7 bits: Pillow's own result
        assert np.array_equal(
            np.asarray(posterize_keeping_zero_bits(image, bits)), np.asarray(ImageOps.posterize(image, bits))
        )
    assert posterize_keeping_zero_bits(image, 8) is image
    try:
        reference = timm_posterize(image, 0)
    except ValueError:
        reference = None  # this Pillow raises: the repair is needed
    if reference is not None:  # an older Pillow: the repair gives its result
        assert np.array_equal(np.asarray(reference), np.asarray(posterize_keeping_zero_bits(image, 0)))
    randaugment = pycls_train_transform(224).transforms[2]
    ops = {op.name: op for op in randaugment.ops}
    assert ops["PosterizeIncreasing"].aug_fn is posterize_keeping_zero_bits
    assert len(ops) == 15
