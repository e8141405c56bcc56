"""Tests of the data modules on the bundled digits and on small fake datasets in the real on-disk formats."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import RandomSampler, SequentialSampler
from torchvision import transforms as T

import lightning_kd.data as data_pkg
from lightning_kd.data import CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule, ImageNetDataModule
from lightning_kd.data.transforms import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from tests.helpers.fake_data import corrupt_image_file, write_fake_cifar100, write_fake_image_folder

N_TRAIN, N_TEST = 200, 100


def test_package_exports_the_four_modules():
    assert set(data_pkg.__all__) == {
        "CIFAR100DataModule",
        "DigitsDataModule",
        "ImageFolderDataModule",
        "ImageNetDataModule",
    }


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule()
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_digits_sizes_shapes_and_classes(digits):
    assert digits.num_classes == 10
    assert len(digits.train_set) + len(digits.val_set) == 1797
    assert len(digits.val_set) == 360  # ceil(0.2 * 1797)
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (64, 3, 32, 32)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.equal(images[:, 0], images[:, 1])
    assert torch.equal(images[:, 0], images[:, 2])
    assert digits.test_set is digits.val_set
    assert len(digits.predict_dataloader().dataset) == 360


def test_digits_split_is_stratified_and_fixed_by_seed(digits):
    labels = load_digits().target
    train, val = digits.train_indices, digits.val_indices
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1797))
    same = DigitsDataModule(seed=0)
    same.setup("fit")
    assert np.array_equal(same.train_indices, train)
    assert np.array_equal(same.val_indices, val)
    other = DigitsDataModule(seed=1)
    other.setup("fit")
    assert not np.array_equal(np.sort(other.val_indices), np.sort(val))
    overall = np.bincount(labels, minlength=10) / len(labels)
    for split in (train, val):
        proportions = np.bincount(labels[split], minlength=10) / len(split)
        assert np.abs(proportions - overall).max() < 1.5 / len(split) + 1e-9
    # The dataset labels follow the split indices.
    assert torch.equal(digits.val_set.tensors[1], torch.from_numpy(labels[val]).long())


def test_digits_normalization_comes_from_the_training_split(digits):
    mean, std = digits.mean, digits.std
    assert len(mean) == len(std) == 3
    assert mean[0] == mean[1] == mean[2]
    assert 0.0 < mean[0] < 1.0
    assert std[0] > 0.0
    train_images = digits.train_set.tensors[0]
    assert abs(train_images.mean().item()) < 1e-5
    assert abs(train_images.std(correction=0).item() - 1.0) < 1e-5
    # Undoing the normalization recovers pixels in [0, 1] (the 0..16 digits scaled by 1/16).
    raw = digits.val_set.tensors[0] * std[0] + mean[0]
    assert raw.min().item() > -1e-5
    assert raw.max().item() < 1 + 1e-5


def test_digits_image_size_and_upsampling():
    dm = DigitsDataModule(image_size=16, batch_size=8)
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 16, 16)


def test_digits_optional_random_shift_translates_images(digits):
    shifted = DigitsDataModule(max_shift=2)
    shifted.setup("fit")
    image, label = shifted.train_set[5]
    original = digits.train_set.tensors[0][5]
    assert label == digits.train_set.tensors[1][5]
    fill = -digits.mean[0] / digits.std[0]
    padded = torch.nn.functional.pad(original, (2, 2, 2, 2), value=fill)
    candidates = [padded[:, top : top + 32, left : left + 32] for top in range(5) for left in range(5)]
    assert any(torch.allclose(image, candidate) for candidate in candidates)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"val_batch_size": -3}, "val_batch_size must be a positive integer, got -3"),
        ({"num_workers": -1}, r"num_workers must be an integer >= 0 .* got -1"),
        ({"val_fraction": 1.0}, "val_fraction must lie strictly between 0 and 1"),
        ({"image_size": 4}, "image_size must be at least the digits' native 8 pixels, got 4"),
        ({"max_shift": -1}, r"max_shift must be an integer in \[0, image_size\)"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)


def test_dataloader_before_setup_explains_what_to_do():
    with pytest.raises(RuntimeError, match=r"train split of DigitsDataModule is not built yet: call setup\('fit'\)"):
        DigitsDataModule().train_dataloader()


# --------------------------------------------------------------------------- CIFAR-100


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return write_fake_cifar100(tmp_path_factory.mktemp("cifar"), n_train=N_TRAIN, n_test=N_TEST)


@pytest.fixture(scope="module")
def cifar(cifar_dir) -> CIFAR100DataModule:
    dm = CIFAR100DataModule(str(cifar_dir), num_workers=0, verify_checksums=False)
    with pytest.warns(UserWarning, match="without verifying md5 checksums"):
        dm.setup("fit")
    dm.setup("test")
    return dm


def _labels(cifar_dir: Path, split: str) -> list[int]:
    with (cifar_dir / "cifar-100-python" / split).open("rb") as file:
        return pickle.load(file, encoding="latin1")["fine_labels"]


def test_cifar100_loads_unchecked_files(cifar, cifar_dir):
    assert cifar.num_classes == 100
    assert len(cifar.train_set) == N_TRAIN
    assert len(cifar.val_set) == N_TEST
    assert cifar.train_set.targets == _labels(cifar_dir, "train")
    images, labels = next(iter(cifar.train_dataloader()))
    assert images.shape == (64, 3, 32, 32)
    assert labels.dtype == torch.int64
    assert set(labels.tolist()) <= set(range(100))


def test_cifar100_validation_and_test_use_the_test_split_in_order(cifar, cifar_dir):
    assert cifar.test_set is cifar.val_set
    assert not cifar.val_set.train
    expected = _labels(cifar_dir, "test")
    for loader in (cifar.val_dataloader(), cifar.test_dataloader(), cifar.predict_dataloader()):
        assert torch.cat([labels for _, labels in loader]).tolist() == expected


def test_cifar100_uses_the_reference_normalization_and_augmentation(cifar):
    assert cifar.mean == CIFAR100_MEAN == (0.5071, 0.4867, 0.4408)
    assert cifar.std == CIFAR100_STD == (0.2675, 0.2565, 0.2761)
    image, _ = cifar.val_set[0]
    raw = torch.from_numpy(cifar.val_set.data[0]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    assert torch.allclose(image, (raw - mean) / std, atol=1e-6)
    crop, flip, _, normalize = cifar.train_set.transform.transforms
    assert isinstance(crop, T.RandomCrop)
    assert crop.size == (32, 32)
    assert crop.padding == 4
    assert isinstance(flip, T.RandomHorizontalFlip)
    assert tuple(normalize.mean) == CIFAR100_MEAN
    assert [type(t) for t in cifar.val_set.transform.transforms] == [T.ToTensor, T.Normalize]


def test_cifar100_dataloader_options(cifar_dir, cifar):
    train = cifar.train_dataloader()
    assert isinstance(train.sampler, RandomSampler)
    assert isinstance(cifar.val_dataloader().sampler, SequentialSampler)
    assert not train.drop_last
    assert len(train) == 4  # ceil(200 / 64): the last partial batch is kept by default
    assert not train.persistent_workers
    dropping = CIFAR100DataModule(str(cifar_dir), num_workers=2, drop_last=True, verify_checksums=False)
    dropping.train_set = cifar.train_set
    dropping.val_set = cifar.val_set
    loader = dropping.train_dataloader()
    assert loader.drop_last
    assert len(loader) == 3
    assert loader.persistent_workers
    assert loader.num_workers == 2
    assert not dropping.val_dataloader().drop_last


def test_cifar100_val_batch_size(cifar):
    dm = CIFAR100DataModule("unused", batch_size=8, val_batch_size=50)
    dm.val_set = cifar.val_set
    assert dm.val_dataloader().batch_size == 50


def test_cifar100_checksum_failure_is_a_clear_error(cifar_dir):
    dm = CIFAR100DataModule(str(cifar_dir), num_workers=0)
    with pytest.raises(
        RuntimeError,
        match=r"\['train', 'test', 'meta'\] in .*cifar-100-python failed the md5 check\. Expected torchvision's "
        r"layout .*\{train,test,meta\}\. Pass download=True .* verify_checksums=False",
    ):
        dm.setup("fit")


@pytest.mark.parametrize("verify", [True, False])
def test_cifar100_missing_folder_is_a_clear_error(tmp_path, verify):
    (tmp_path / "notes.txt").write_text("not CIFAR")  # data_dir exists and is not empty, cifar-100-python/ is absent
    dm = CIFAR100DataModule(str(tmp_path), verify_checksums=verify)
    dm.prepare_data()  # download=False: touches nothing
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(
        FileNotFoundError, match=r"\['train', 'test', 'meta'\] not found in .*cifar-100-python\. .*download=True"
    ):
        dm.setup("fit")


def test_cifar100_missing_data_dir_is_a_clear_error(tmp_path):
    dm = CIFAR100DataModule(str(tmp_path / "nowhere"), verify_checksums=False)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 data_dir .*nowhere does not exist\. .*download=True"):
        dm.setup("fit")


def test_cifar100_empty_data_dir_is_a_clear_error(tmp_path):
    dm = CIFAR100DataModule(str(tmp_path), verify_checksums=False)
    with pytest.raises(
        FileNotFoundError, match=r"CIFAR-100 data_dir .* is empty\. Expected torchvision's layout .*download=True"
    ):
        dm.setup("validate")


def test_cifar100_unreadable_pickle_is_a_clear_error(tmp_path):
    root = write_fake_cifar100(tmp_path, n_train=10, n_test=10)
    (root / "cifar-100-python" / "train").write_bytes(b"\x80\x02truncated")
    dm = CIFAR100DataModule(str(root), verify_checksums=False)
    with (
        pytest.warns(UserWarning, match="without verifying md5"),
        pytest.raises(RuntimeError, match=r"cifar-100-python/train could not be read .*truncated or not a CIFAR-100"),
    ):
        dm.setup("fit")


def test_cifar100_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got -1"):
        CIFAR100DataModule("unused", batch_size=-1)


# --------------------------------------------------------------------------- ImageFolder / ImageNet


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folders")
    for split in ("train", "val", "test"):
        write_fake_image_folder(root / split, ["cat", "dog", "eel"], n_per_class=2)
    write_fake_image_folder(root / "val_mismatch", ["cat", "dog", "fox"], n_per_class=1)
    (root / "empty").mkdir()
    (root / "flat").mkdir()
    for name in ("a.png", "b.png"):  # images with no class folder around them
        (root / "flat" / name).write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    return root


def test_image_folder_infers_classes_and_batches(folders):
    dm = ImageFolderDataModule(str(folders / "train"), str(folders / "val"), batch_size=4, num_workers=0, image_size=32)
    assert dm.num_classes == 3  # known before setup
    assert dm.classes == ["cat", "dog", "eel"]
    assert dm.mean == IMAGENET_MEAN
    assert dm.std == IMAGENET_STD
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert set(labels.tolist()) <= {0, 1, 2}
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    resize, crop, _, _ = dm.eval_transform.transforms
    assert resize.size == 36  # int(32 * 256 / 224)
    assert crop.size == (32, 32)
    dm.setup("test")
    assert dm.test_set is dm.val_set


def test_image_folder_separate_test_dir_and_custom_transforms(folders):
    def to_tensor(image):
        return T.functional.to_tensor(image.resize((8, 8)))

    dm = ImageFolderDataModule(
        str(folders / "train"),
        str(folders / "val"),
        test_dir=str(folders / "test"),
        batch_size=6,
        num_workers=0,
        train_transform=to_tensor,
        eval_transform=to_tensor,
    )
    dm.setup("test")
    assert dm.train_set is None
    assert dm.test_set.root == str(folders / "test")
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (6, 3, 8, 8)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_folder_missing_and_empty_folders_are_clear_errors(folders):
    with pytest.raises(FileNotFoundError, match=r"training folder .*nowhere does not exist\. Expected ImageFolder"):
        ImageFolderDataModule(str(folders / "nowhere"), str(folders / "val"))
    with pytest.raises(FileNotFoundError, match=r"training folder .*empty is empty\. Expected ImageFolder trees"):
        ImageFolderDataModule(str(folders / "empty"), str(folders / "val"))
    with pytest.raises(FileNotFoundError, match=r"training folder .*flat has no class sub-folders \(its 2 entries"):
        ImageFolderDataModule(str(folders / "flat"), str(folders / "val"))
    dm = ImageFolderDataModule(str(folders / "train"), str(folders / "empty"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"validation folder .*empty is empty"):
        dm.setup("validate")
    dm = ImageFolderDataModule(str(folders / "train"), str(folders / "no_val"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"validation folder .*no_val does not exist"):
        dm.setup("fit")


def test_image_folder_class_mismatch_is_a_clear_error(folders):
    dm = ImageFolderDataModule(str(folders / "train"), str(folders / "val_mismatch"), num_workers=0)
    with pytest.raises(ValueError, match=r"different classes .* missing \['eel'\], unexpected \['fox'\]"):
        dm.setup("validate")


def test_image_folder_empty_class_folder_is_a_clear_error(tmp_path):
    write_fake_image_folder(tmp_path / "train", ["cat", "dog"], n_per_class=1)
    write_fake_image_folder(tmp_path / "val", ["cat", "dog"], n_per_class=1)
    (tmp_path / "train" / "eel").mkdir()
    (tmp_path / "train" / "eel" / "README.txt").write_text("no images here")  # not an image extension
    dm = ImageFolderDataModule(str(tmp_path / "train"), str(tmp_path / "val"), num_workers=0)
    assert dm.num_classes == 3
    with pytest.raises(
        FileNotFoundError,
        match=r"1 class folder\(s\) of the training folder .*train hold no image: \['eel'\] \(image files end in "
        r"\.jpg, .*\)\. Add images to them, or delete the folders from every split",
    ):
        dm.setup("fit")
    # The same check guards the evaluation splits.
    (tmp_path / "val" / "eel").mkdir()
    with pytest.raises(FileNotFoundError, match=r"validation folder .*val hold no image: \['eel'\]"):
        dm.setup("validate")


@pytest.fixture
def damaged_tree(tmp_path) -> Path:
    """cat/dog/eel with 3 images each; cat/1.png truncated and dog/2.png not an image at all."""
    for split in ("train", "val"):
        write_fake_image_folder(tmp_path / split, ["cat", "dog", "eel"], n_per_class=3, size=(16, 16))
    corrupt_image_file(tmp_path / "train" / "cat" / "1.png", "truncated")
    corrupt_image_file(tmp_path / "train" / "dog" / "2.png", "garbage")
    return tmp_path


def _read_all(dataset) -> None:
    for index in range(len(dataset)):
        dataset[index]


def test_corrupt_image_fails_when_read_naming_the_file(damaged_tree):
    dm = ImageFolderDataModule(
        str(damaged_tree / "train"), str(damaged_tree / "val"), num_workers=0, image_size=8, corrupt_images="fail"
    )
    dm.setup("fit")  # no up-front scan by default: the tree is only indexed
    assert len(dm.train_set) == 9
    with pytest.raises(RuntimeError, match=r"Cannot read the image file .*cat/1\.png .*corrupt_images='skip'"):
        _read_all(dm.train_set)


def test_corrupt_images_verified_up_front_list_every_file(damaged_tree):
    dm = ImageFolderDataModule(
        str(damaged_tree / "train"), str(damaged_tree / "val"), num_workers=0, verify_images=True
    )
    with pytest.raises(
        RuntimeError,
        match=r"2 image file\(s\) in the training folder .*train cannot be read: .*cat/1\.png \(.*\); "
        r".*dog/2\.png \(UnidentifiedImageError.*\)\. Replace or delete them, or pass corrupt_images='skip'",
    ):
        dm.setup("fit")


def test_corrupt_images_skipped_with_a_warning_naming_them(damaged_tree):
    dm = ImageFolderDataModule(
        str(damaged_tree / "train"), str(damaged_tree / "val"), num_workers=0, image_size=8, corrupt_images="skip"
    )
    with pytest.warns(
        UserWarning, match=r"Skipped 2 unreadable image file\(s\) in the training folder .*cat/1\.png.*dog/2\.png"
    ):
        dm.setup("fit")
    assert len(dm.train_set) == 7
    assert sorted(Path(p).relative_to(damaged_tree / "train").as_posix() for p in dm.train_set.skipped) == [
        "cat/1.png",
        "dog/2.png",
    ]
    assert dm.train_set.targets == [0, 0, 1, 1, 2, 2, 2]
    _read_all(dm.train_set)  # every remaining file decodes
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (7, 3, 8, 8)
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 2]
    assert len(dm.val_set) == 9  # the intact validation tree loses nothing


def test_skipping_every_image_of_a_class_is_a_clear_error(damaged_tree):
    for name in ("0.png", "2.png"):
        corrupt_image_file(damaged_tree / "train" / "cat" / name, "garbage")
    dm = ImageFolderDataModule(str(damaged_tree / "train"), str(damaged_tree / "val"), corrupt_images="skip")
    with (
        pytest.warns(UserWarning, match="Skipped 4 unreadable"),
        pytest.raises(FileNotFoundError, match=r"hold no image after skipping unreadable files: \['cat'\]"),
    ):
        dm.setup("fit")


def test_imagenet_passes_the_corrupt_image_option_on(tmp_path):
    write_fake_image_folder(tmp_path / "train", ["n01"], n_per_class=2, size=(16, 16), extension="JPEG")
    write_fake_image_folder(tmp_path / "val", ["n01"], n_per_class=1, size=(16, 16), extension="JPEG")
    corrupt_image_file(tmp_path / "train" / "n01" / "0.JPEG", "truncated")
    dm = ImageNetDataModule(str(tmp_path), num_workers=0, corrupt_images="skip")
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\) .*n01/0\.JPEG"):
        dm.setup("fit")
    assert len(dm.train_set) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size must be a positive integer, got 0"),
        ({"mean": (0.5, 0.5)}, "mean and std need one value per RGB channel"),
        ({"std": (0.2, 0.0, 0.2)}, r"std values must be positive .* got \(0.2, 0.0, 0.2\)"),
        ({"corrupt_images": "ignore"}, r"corrupt_images must be 'fail' or 'skip', got 'ignore'"),
    ],
)
def test_image_folder_rejects_bad_arguments(folders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(str(folders / "train"), str(folders / "val"), **kwargs)


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    wnids = ["n01440764", "n01443537"]
    write_fake_image_folder(root / "train", wnids, n_per_class=2, size=(64, 48), extension="JPEG")
    write_fake_image_folder(root / "val", wnids, n_per_class=1, size=(64, 48), extension="JPEG")
    return root


def test_imagenet_reference_transforms_and_batches(imagenet_dir):
    dm = ImageNetDataModule(str(imagenet_dir), batch_size=2, num_workers=0)
    assert isinstance(dm, ImageFolderDataModule)
    assert dm.num_classes == 2
    assert dm.mean == (0.485, 0.456, 0.406)
    assert dm.std == (0.229, 0.224, 0.225)
    assert dm.batch_size == 2
    assert ImageNetDataModule(str(imagenet_dir)).batch_size == 256
    crop, flip, _, _ = dm.train_transform.transforms
    assert isinstance(crop, T.RandomResizedCrop)
    assert crop.size == (224, 224)
    assert isinstance(flip, T.RandomHorizontalFlip)
    resize, center, _, _ = dm.eval_transform.transforms
    assert resize.size == 256
    assert center.size == (224, 224)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 224, 224)
    assert labels.dtype == torch.int64
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (2, 3, 224, 224)
    assert labels.tolist() == [0, 1]


def test_imagenet_missing_folders_name_the_layout(tmp_path, imagenet_dir):
    with pytest.raises(FileNotFoundError, match=r"<data_dir>/train/<wnid>/\*\.JPEG and <data_dir>/val/<wnid>/\*\.JPEG"):
        ImageNetDataModule(str(tmp_path))
    partial = tmp_path / "partial"
    write_fake_image_folder(partial / "train", ["n01440764"], n_per_class=1, extension="JPEG")
    dm = ImageNetDataModule(str(partial), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"validation folder .*val does not exist\. Expected the ImageNet"):
        dm.setup("fit")
