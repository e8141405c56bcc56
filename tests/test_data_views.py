"""MLKD's two views: the RandAugment op list and ranges, Cutout, and the (weak, strong) batches of the data modules."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms as T

from lightning_kd.data import CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule, ImageNetDataModule
from lightning_kd.data.randaugment import CUTOUT_FILL, MLKD_OPS, AugmentOp, Cutout, RandAugment, TwoViews
from tests.helpers.fake_data import write_fake_cifar100, write_fake_image_folder

OPS = {op.name: op for op in MLKD_OPS}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A 16x16 RGB image whose pixels cover the whole 0..255 range, with a gradient so geometric ops show."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    pixels[0, 0] = (0, 0, 0)
    pixels[-1, -1] = (255, 255, 255)
    return Image.fromarray(pixels)


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


# --------------------------------------------------------------------------- the op list


def test_the_op_list_and_value_ranges_are_the_references():
    ranges = {op.name: (op.low, op.high) for op in MLKD_OPS}
    assert ranges == {
        "AutoContrast": (0.0, 1.0),
        "Brightness": (0.05, 0.95),
        "Color": (0.05, 0.95),
        "Contrast": (0.05, 0.95),
        "Equalize": (0.0, 1.0),
        "Identity": (0.0, 1.0),
        "Posterize": (4.0, 8.0),
        "Rotate": (-30.0, 30.0),
        "Sharpness": (0.05, 0.95),
        "ShearX": (-0.3, 0.3),
        "ShearY": (-0.3, 0.3),
        "Solarize": (0.0, 256.0),
        "TranslateX": (-0.3, 0.3),
        "TranslateY": (-0.3, 0.3),
    }


def test_value_free_ops(image):
    a = _array(image)
    assert np.array_equal(_array(OPS["Identity"](image, 0.7)), a)
    stretched = _array(OPS["AutoContrast"](image, 0.3))
    assert np.array_equal(stretched, _array(ImageOps.autocontrast(image)))
    assert (stretched.min(axis=(0, 1)) == 0).all()
    assert (stretched.max(axis=(0, 1)) == 255).all()
    assert np.array_equal(_array(OPS["Equalize"](image, 0.3)), _array(ImageOps.equalize(image)))


def test_posterize_keeps_the_truncated_number_of_bits(image):
    a = _array(image)
    for value, bits in [(4.0, 4), (5.9, 5), (7.99, 7), (8.0, 8)]:
        mask = (0xFF << (8 - bits)) & 0xFF
        assert np.array_equal(_array(OPS["Posterize"](image, value)), a & mask), value


def test_solarize_inverts_pixels_at_or_above_the_threshold(image):
    a = _array(image)
    for threshold in (0.0, 100.5, 128.0, 256.0):
        expected = np.where(a >= threshold, 255 - a, a)
        assert np.array_equal(_array(OPS["Solarize"](image, threshold)), expected), threshold


@pytest.mark.parametrize("name", ["Brightness", "Color", "Contrast", "Sharpness"])
def test_enhance_ops_use_the_value_as_pil_factor(image, name):
    enhancer = getattr(ImageEnhance, name)
    for value in (0.05, 0.5, 0.95):
        assert np.array_equal(_array(OPS[name](image, value)), _array(enhancer(image).enhance(value)))
    # The factor matters: the range's two ends give different images.
    assert not np.array_equal(_array(OPS[name](image, 0.05)), _array(OPS[name](image, 0.95)))


def test_brightness_scales_the_pixels(image):
    a = _array(image)
    assert np.abs(_array(OPS["Brightness"](image, 0.5)) - a * 0.5).max() <= 1


def test_rotate_is_counter_clockwise_in_degrees(image):
    a = _array(image)
    assert np.array_equal(_array(OPS["Rotate"](image, 90.0)), np.rot90(a, 1))  # square image: nothing cut off
    assert np.array_equal(_array(OPS["Rotate"](image, -30.0)), _array(image.rotate(-30.0)))


@pytest.mark.parametrize(("name", "value"), [("TranslateX", 0.25), ("TranslateX", -0.125), ("TranslateY", 0.25)])
def test_translate_moves_by_the_value_times_the_size(image, name, value):
    a = _array(image)
    shift = round(value * 16)
    expected = np.zeros_like(a)
    if name == "TranslateX":  # output column x reads input column x + shift
        src = np.arange(16) + shift
        valid = (src >= 0) & (src < 16)
        expected[:, valid] = a[:, src[valid]]
    else:
        src = np.arange(16) + shift
        valid = (src >= 0) & (src < 16)
        expected[valid] = a[src[valid]]
    assert np.array_equal(_array(OPS[name](image, value)), expected)


@pytest.mark.parametrize(("name", "value"), [("ShearX", 0.25), ("ShearX", -0.3), ("ShearY", 0.23)])
def test_shear_maps_each_pixel_affinely(image, name, value):
    a = _array(image)
    expected = np.zeros_like(a)
    for y in range(16):
        for x in range(16):
            # PIL samples the input at the output pixel's centre mapped through the affine map (nearest).
            if name == "ShearX":
                xs, ys = math.floor(x + 0.5 + value * (y + 0.5)), y
            else:
                xs, ys = x, math.floor(y + 0.5 + value * (x + 0.5))
            if 0 <= xs < 16 and 0 <= ys < 16:
                expected[y, x] = a[ys, xs]
    assert np.array_equal(_array(OPS[name](image, value)), expected)


# --------------------------------------------------------------------------- RandAugment and Cutout


def test_randaugment_draws_ops_with_replacement_and_uniform_values():
    calls: list[tuple[str, float]] = []

    def recorder(name: str):
        def apply(img, value):
            calls.append((name, value))
            return img

        return apply

    ops = [AugmentOp("a", recorder("a"), -1.0, 3.0), AugmentOp("b", recorder("b"), 10.0, 11.0)]
    augment = RandAugment(num_ops=2, ops=ops)
    torch.manual_seed(0)
    pairs = []
    for _ in range(2000):
        calls.clear()
        augment(Image.new("RGB", (4, 4)))
        assert len(calls) == 2
        pairs.append(tuple(name for name, _ in calls))
        calls_by_name = dict(calls)
        assert all(op.low <= calls_by_name.get(op.name, op.low) <= op.high for op in ops)
    # With replacement: the same op twice happens about half the time for 2 ops.
    same = sum(p[0] == p[1] for p in pairs) / len(pairs)
    assert 0.45 < same < 0.55
    # Values spread uniformly over the range: check the deciles of op "a".
    torch.manual_seed(1)
    values = []
    for _ in range(1500):
        calls.clear()
        augment(Image.new("RGB", (4, 4)))
        values += [v for name, v in calls if name == "a"]
    fractions = np.histogram(values, bins=10, range=(-1.0, 3.0))[0] / len(values)
    assert np.abs(fractions - 0.1).max() < 0.03
    assert "num_ops=2" in repr(augment)


def test_randaugment_is_reproducible_under_torch_seed(image):
    augment = RandAugment()
    torch.manual_seed(3)
    first = [_array(augment(image)) for _ in range(5)]
    torch.manual_seed(3)
    second = [_array(augment(image)) for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def test_randaugment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_ops must be an integer >= 0"):
        RandAugment(num_ops=-1)
    with pytest.raises(ValueError, match="ops must name at least one operation"):
        RandAugment(ops=[])


def test_cutout_paints_a_reference_coloured_square_of_at_most_half_the_width():
    black = Image.new("RGB", (32, 32))
    cutout = Cutout()
    torch.manual_seed(0)
    sides = []
    for _ in range(400):
        out = _array(cutout(black))
        painted = out.any(axis=2)
        if not painted.any():
            sides.append(0)
            continue
        assert (out[painted] == CUTOUT_FILL).all()
        rows, cols = np.nonzero(painted)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert painted.sum() == height * width  # one solid rectangle
        assert max(height, width) <= 16  # side <= 0.5 * width
        # A square, unless the image border clipped it.
        if rows.min() > 0 and rows.max() < 31 and cols.min() > 0 and cols.max() < 31:
            assert height == width
        sides.append(max(height, width))
    assert max(sides) >= 14  # sides reach close to half the width ...
    assert min(sides) <= 2  # ... and close to zero
    assert _array(black).max() == 0  # the input image is left untouched


def test_cutout_rejects_bad_fraction():
    with pytest.raises(ValueError, match=r"max_fraction must lie in \[0, 1\] .* got 1.5"):
        Cutout(max_fraction=1.5)


# --------------------------------------------------------------------------- data modules


@pytest.fixture(scope="module")
def cifar_two_views(tmp_path_factory) -> CIFAR100DataModule:
    root = write_fake_cifar100(tmp_path_factory.mktemp("cifar_views"), n_train=40, n_test=20)
    dm = CIFAR100DataModule(str(root), batch_size=8, num_workers=0, verify_checksums=False, two_views=True)
    with pytest.warns(UserWarning, match="without verifying md5"):
        dm.setup("fit")
    return dm


def test_cifar_two_views_samples_and_batches(cifar_two_views):
    dm = cifar_two_views
    assert dm.two_views
    (weak, strong), target = dm.train_set[0]
    assert weak.shape == strong.shape == (3, 32, 32)
    assert isinstance(target, int)
    views, targets = next(iter(dm.train_dataloader()))
    assert isinstance(views, (list, tuple))  # default collation of ((w, s), y) gives [W, S]
    assert len(views) == 2
    assert views[0].shape == views[1].shape == (8, 3, 32, 32)
    assert targets.shape == (8,)
    assert not torch.equal(views[0], views[1])
    transform = dm.train_set.transform
    assert isinstance(transform, TwoViews)
    assert [type(t) for t in transform.weak.transforms] == [
        T.RandomCrop,
        T.RandomHorizontalFlip,
        T.ToTensor,
        T.Normalize,
    ]
    assert [type(t) for t in transform.strong.transforms] == [
        T.RandomCrop,
        T.RandomHorizontalFlip,
        RandAugment,
        Cutout,
        T.ToTensor,
        T.Normalize,
    ]
    strong_crop, _, randaugment, cutout, _, normalize = transform.strong.transforms
    assert strong_crop.padding == 4
    assert randaugment.num_ops == 2
    assert randaugment.ops == MLKD_OPS
    assert cutout.max_fraction == 0.5
    assert cutout.fill == (125, 123, 114)
    assert tuple(normalize.mean) == dm.mean


def test_cifar_strong_view_is_the_weak_pipeline_plus_randaugment_and_cutout(cifar_two_views):
    # Undo the normalization: the weak view is a crop of the zero-padded image; the strong view usually is not.
    dm = cifar_two_views
    mean, std = torch.tensor(dm.mean)[:, None, None], torch.tensor(dm.std)[:, None, None]
    raw = torch.from_numpy(dm.train_set.data[0]).permute(2, 0, 1)
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    crops = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    crops += [c.flip(-1) for c in crops]

    def is_crop(view):
        pixels = ((view * std + mean) * 255).round().to(torch.uint8)
        return any(torch.equal(pixels, crop) for crop in crops)

    torch.manual_seed(0)
    samples = [dm.train_set[0][0] for _ in range(20)]
    assert all(is_crop(weak) for weak, _ in samples)
    assert sum(not is_crop(strong) for _, strong in samples) >= 15  # Identity twice or a no-op draw is rare


def test_cifar_validation_stays_single_view(cifar_two_views):
    dm = cifar_two_views
    images, targets = next(iter(dm.val_dataloader()))
    assert isinstance(images, torch.Tensor)
    assert images.shape == (8, 3, 32, 32)
    assert targets.shape == (8,)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("views_folders")
    for split in ("train", "val"):
        write_fake_image_folder(root / split, ["a", "b"], n_per_class=2, size=(40, 30))
    return root


def test_image_folder_two_views(folders):
    dm = ImageFolderDataModule(
        str(folders / "train"), str(folders / "val"), batch_size=4, num_workers=0, image_size=24, two_views=True
    )
    dm.setup("fit")
    (weak, strong), targets = next(iter(dm.train_dataloader()))
    assert weak.shape == strong.shape == (4, 3, 24, 24)
    assert targets.shape == (4,)
    assert not torch.equal(weak, strong)
    strong_types = [type(t) for t in dm.strong_transform.transforms]
    assert strong_types == [T.RandomResizedCrop, T.RandomHorizontalFlip, RandAugment, Cutout, T.ToTensor, T.Normalize]
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 24, 24)


def test_image_folder_custom_transforms_and_views(folders):
    def small(image):
        return T.functional.to_tensor(image.resize((8, 8)))

    with pytest.raises(ValueError, match="two_views=True with a custom train_transform needs a strong_transform"):
        ImageFolderDataModule(str(folders / "train"), str(folders / "val"), train_transform=small, two_views=True)
    with pytest.raises(ValueError, match="strong_transform is only used with two_views=True"):
        ImageFolderDataModule(str(folders / "train"), str(folders / "val"), strong_transform=small)
    dm = ImageFolderDataModule(
        str(folders / "train"),
        str(folders / "val"),
        batch_size=2,
        num_workers=0,
        train_transform=small,
        strong_transform=small,
        two_views=True,
    )
    dm.setup("fit")
    (weak, strong), _ = next(iter(dm.train_dataloader()))
    assert weak.shape == strong.shape == (2, 3, 8, 8)


def test_imagenet_two_views(tmp_path):
    write_fake_image_folder(tmp_path / "train", ["n01", "n02"], n_per_class=1, size=(64, 48), extension="JPEG")
    write_fake_image_folder(tmp_path / "val", ["n01", "n02"], n_per_class=1, size=(64, 48), extension="JPEG")
    dm = ImageNetDataModule(str(tmp_path), batch_size=2, num_workers=0, two_views=True)
    dm.setup("fit")
    (weak, strong), _ = next(iter(dm.train_dataloader()))
    assert weak.shape == strong.shape == (2, 3, 224, 224)


def test_digits_two_views():
    dm = DigitsDataModule(batch_size=16, two_views=True)
    dm.setup("fit")
    (weak, strong), targets = next(iter(dm.train_dataloader()))
    assert weak.shape == strong.shape == (16, 3, 32, 32)
    assert targets.shape == (16,)
    assert not torch.equal(weak, strong)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (16, 3, 32, 32)


def test_mlkd_trains_on_two_view_batches_of_the_default_collation(tmp_path):
    # The default collation turns ((weak, strong), y) samples into ([W, S], Y): a list of views, which the module
    # runs through both networks like a tuple.
    from lightning.pytorch import Callback, Trainer, seed_everything

    from lightning_kd import DistillationModule
    from lightning_kd.losses import MLKD
    from tests.helpers.tiny import TinyNet

    class Record(Callback):
        def __init__(self):
            self.losses, self.view_counts = [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            views, _ = batch
            self.view_counts.append(len(views) if isinstance(views, (list, tuple)) else 1)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))

    seed_everything(0)
    record = Record()
    dm = DigitsDataModule(batch_size=32, two_views=True)
    module = DistillationModule(TinyNet(num_classes=10), TinyNet(num_classes=10), MLKD(), num_classes=10)
    trainer = Trainer(
        max_steps=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3
    assert record.view_counts == [2, 2, 2]
    assert all(math.isfinite(loss) for loss in record.losses)
