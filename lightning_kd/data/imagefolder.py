"""Users' own image datasets laid out as torchvision ``ImageFolder`` trees."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing_extensions import override

from lightning_kd.data.base import BaseDataModule, check_positive_int
from lightning_kd.data.image_files import CheckedImageFolder, CorruptImages
from lightning_kd.data.randaugment import TwoViews
from lightning_kd.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_eval_transform,
    imagenet_strong_transform,
    imagenet_train_transform,
)

__all__ = ["ImageFolderDataModule"]


class ImageFolderDataModule(BaseDataModule):
    """Train/validation(/test) splits stored as ``<split_dir>/<class_name>/<image>`` folders.

    The classes are the sub-folders of ``train_dir`` (sorted by name, as ``ImageFolder`` numbers them), read
    when the module is created so that ``num_classes`` is known before any data is loaded. The other splits
    must have exactly the same class sub-folders. Default transforms: ``RandomResizedCrop(image_size)`` and a
    horizontal flip for training; a resize of the short side to ``image_size * 256 / 224`` and a center crop
    for evaluation; both normalized with ``mean``/``std``.

    The trees are checked in ``setup``, before any training step: a missing or empty split folder, a class
    folder without images, and (as ``corrupt_images`` says) unreadable image files are errors that name the
    folder or file.

    Args:
        train_dir: Root of the training tree.
        val_dir: Root of the validation tree.
        test_dir: Root of the test tree; ``None`` tests on the validation tree.
        batch_size: Samples per training batch.
        num_workers: Worker processes per dataloader.
        image_size: Side of the square crops the default transforms produce.
        mean: Per-channel normalization mean of the default transforms (ImageNet's by default).
        std: Per-channel normalization standard deviation of the default transforms (ImageNet's by default).
        train_transform: Replaces the default training transform (image to tensor); keep ``mean``/``std``
            in sync with it, since other components read them.
        eval_transform: Replaces the default evaluation transform.
        drop_last: Drop the last incomplete training batch.
        val_batch_size: Samples per validation/test batch; ``None`` uses ``batch_size``.
        two_views: Training samples become ``((weak, strong), target)`` for MLKD: ``weak`` is the training
            transform, ``strong`` the default crop and flip followed by RandAugment (2 ops) and Cutout
            (:func:`~lightning_kd.data.transforms.imagenet_strong_transform`). Evaluation stays single-view.
        strong_transform: Replaces the default strong-view transform (only with ``two_views=True``); required
            when ``train_transform`` is given, so that both views have the same size.
        corrupt_images: What an unreadable image file does. ``"fail"`` (default): an error naming the file,
            raised when it is read (or in ``setup`` with ``verify_images=True``). ``"skip"``: ``setup``
            decodes every file once, drops the unreadable ones and warns with their number and names.
        verify_images: With ``corrupt_images="fail"``, decode every file in ``setup`` and list all unreadable
            ones in one error before training starts, instead of failing mid-epoch at the first one read.
            Reads the whole dataset once (minutes for ImageNet).
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str,
        test_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        train_transform: Callable[[Any], Any] | None = None,
        eval_transform: Callable[[Any], Any] | None = None,
        drop_last: bool = False,
        val_batch_size: int | None = None,
        two_views: bool = False,
        strong_transform: Callable[[Any], Any] | None = None,
        corrupt_images: CorruptImages = "fail",
        verify_images: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, drop_last=drop_last, val_batch_size=val_batch_size)
        check_positive_int("image_size", image_size)
        if corrupt_images not in ("fail", "skip"):
            raise ValueError(f"corrupt_images must be 'fail' or 'skip', got {corrupt_images!r}.")
        if strong_transform is not None and not two_views:
            raise ValueError("strong_transform is only used with two_views=True; set two_views=True or drop it.")
        if two_views and train_transform is not None and strong_transform is None:
            raise ValueError(
                "two_views=True with a custom train_transform needs a strong_transform too (the default strong "
                "view would not match your training transform's size and normalization)."
            )
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel (3 each), got mean={mean}, std={std}.")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive (they divide the pixels), got {std}.")
        self.train_dir = str(train_dir)
        self.val_dir = str(val_dir)
        self.test_dir = None if test_dir is None else str(test_dir)
        self.image_size = image_size
        self.mean = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.std = (float(std[0]), float(std[1]), float(std[2]))
        self.train_transform = train_transform or imagenet_train_transform(image_size, self.mean, self.std)
        self.eval_transform = eval_transform or imagenet_eval_transform(image_size, self.mean, self.std)
        self.two_views = two_views
        self.strong_transform = (
            (strong_transform or imagenet_strong_transform(image_size, self.mean, self.std)) if two_views else None
        )
        self.corrupt_images = corrupt_images
        self.verify_images = verify_images
        self.classes = self._list_classes(self.train_dir, "training")
        self.num_classes = len(self.classes)

    @override
    def prepare_data(self) -> None:
        """Nothing to download: the folders are the user's."""

    @override
    def setup(self, stage: str | None = None) -> None:
        """Index the image files of the splits the stage needs.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or ``None`` for all.

        Raises:
            FileNotFoundError: When a split folder is missing, empty or has no class sub-folders, or a class
                folder holds no image.
            ValueError: When a split's class sub-folders differ from the training ones.
            RuntimeError: When ``verify_images=True``, ``corrupt_images="fail"`` and some files cannot be read.
        """
        if stage in (None, "fit") and self.train_set is None:
            transform = self.train_transform
            if self.two_views:
                transform = TwoViews(self.train_transform, self.strong_transform)
            self.train_set = self._folder(self.train_dir, "training", transform)
        if self.val_set is None and (stage in (None, "fit", "validate") or self.test_dir is None):
            self.val_set = self._eval_folder(self.val_dir, "validation")
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self.val_set if self.test_dir is None else self._eval_folder(self.test_dir, "test")

    def _folder(self, folder: str, split: str, transform: Callable[[Any], Any]) -> CheckedImageFolder:
        return CheckedImageFolder(
            folder,
            transform=transform,
            split=split,
            corrupt_images=self.corrupt_images,
            verify_images=self.verify_images,
        )

    def _eval_folder(self, folder: str, split: str) -> CheckedImageFolder:
        classes = self._list_classes(folder, split)
        if classes != self.classes:
            missing = sorted(set(self.classes) - set(classes))
            extra = sorted(set(classes) - set(self.classes))
            raise ValueError(
                f"The {split} folder {folder} has different classes from the training folder {self.train_dir}: "
                f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                f"unexpected {extra[:10]}{' ...' if len(extra) > 10 else ''}. Every split needs the same class "
                "sub-folders so that a label means the same class everywhere."
            )
        return self._folder(folder, split, self.eval_transform)

    def _list_classes(self, folder: str, split: str) -> list[str]:
        """Sorted names of the class sub-folders of ``folder``; raise the layout error when there are none."""
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"The {split} folder {folder} does not exist. {self._layout_help()}")
        entries = list(os.scandir(folder))
        if not entries:
            raise FileNotFoundError(f"The {split} folder {folder} is empty. {self._layout_help()}")
        classes = sorted(entry.name for entry in entries if entry.is_dir())
        if not classes:
            raise FileNotFoundError(
                f"The {split} folder {folder} has no class sub-folders (its {len(entries)} entries are files). "
                f"{self._layout_help()}"
            )
        return classes

    def _layout_help(self) -> str:
        return (
            "Expected ImageFolder trees with one sub-folder of images per class: "
            f"{self.train_dir}/<class_name>/<image> and {self.val_dir}/<class_name>/<image>, same class names."
        )
