"""CIFAR-100 in torchvision's on-disk format, with the reference augmentation and normalization."""

import warnings
from pathlib import Path
from typing import ClassVar

from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity
from typing_extensions import override

from lightning_kd.data.base import BaseDataModule
from lightning_kd.data.transforms import CIFAR100_MEAN, CIFAR100_STD, cifar_eval_transform, cifar_train_transform

__all__ = ["CIFAR100DataModule"]


class CIFAR100DataModule(BaseDataModule):
    """CIFAR-100 (50,000 training and 10,000 test images of 32x32 pixels, 100 classes).

    Reads ``<data_dir>/cifar-100-python/{train,test,meta}`` through ``torchvision.datasets.CIFAR100``.
    Training uses the reference augmentation (random crop 32 with padding 4, horizontal flip); validation and
    test both use the CIFAR-100 test split, as the paper reports. Normalization uses the reference constants
    ``mean=(0.5071, 0.4867, 0.4408)``, ``std=(0.2675, 0.2565, 0.2761)``.

    Args:
        data_dir: Folder that contains (or, with ``download=True``, will contain) ``cifar-100-python/``.
        batch_size: Samples per training batch (64 in the reference recipe).
        num_workers: Worker processes per dataloader.
        download: Download and extract the dataset in ``prepare_data`` when it is not there yet.
        verify_checksums: Check the files against torchvision's md5 sums. Set it to ``False`` for a copy
            whose files differ byte-wise from the original download (e.g. a reconstruction); the files are
            then only required to exist, and a warning says so.
        drop_last: Drop the last incomplete training batch (off in the reference recipe).
        val_batch_size: Samples per validation/test batch; ``None`` uses ``batch_size``.
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        num_workers: int = 2,
        download: bool = False,
        verify_checksums: bool = True,
        drop_last: bool = False,
        val_batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, drop_last=drop_last, val_batch_size=val_batch_size)
        self.data_dir = str(data_dir)
        self.download = download
        self.verify_checksums = verify_checksums
        self.num_classes = 100
        self.mean = CIFAR100_MEAN
        self.std = CIFAR100_STD

    @override
    def prepare_data(self) -> None:
        """Download and extract CIFAR-100 into ``data_dir`` when ``download=True`` and it is not there yet."""
        if self.download:
            # The unchecked class treats existing files as present, so a copy that differs from the original
            # download is kept rather than overwritten.
            dataset_cls = CIFAR100 if self.verify_checksums else _UncheckedCIFAR100
            for train in (True, False):
                dataset_cls(self.data_dir, train=train, download=True)

    @override
    def setup(self, stage: str | None = None) -> None:
        """Load the training split (for ``fit``) and the test split (validation, test and predict).

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or ``None`` for all.

        Raises:
            FileNotFoundError: When ``cifar-100-python/`` or one of its files is missing.
            RuntimeError: When ``verify_checksums=True`` and a file fails the md5 check.
        """
        need_train = stage in (None, "fit") and self.train_set is None
        if not need_train and self.val_set is not None:
            return
        dataset_cls = self._dataset_class()
        if need_train:
            self.train_set = dataset_cls(self.data_dir, train=True, transform=cifar_train_transform())
        if self.val_set is None:
            self.val_set = dataset_cls(self.data_dir, train=False, transform=cifar_eval_transform())
        self.test_set = self.val_set

    def _dataset_class(self) -> type[CIFAR100]:
        """Check the files on disk and pick the dataset class; raise the layout error when they do not pass."""
        folder = Path(self.data_dir) / CIFAR100.base_folder
        names = [name for name, _ in CIFAR100.train_list + CIFAR100.test_list] + [CIFAR100.meta["filename"]]
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"CIFAR-100 file(s) {missing} not found in {folder}. {self._layout_help()}")
        if not self.verify_checksums:
            warnings.warn(
                f"Loading CIFAR-100 from {folder} without verifying md5 checksums (verify_checksums=False).",
                UserWarning,
                stacklevel=3,
            )
            return _UncheckedCIFAR100
        md5s = [*CIFAR100.train_list, *CIFAR100.test_list, [CIFAR100.meta["filename"], CIFAR100.meta["md5"]]]
        failed = [name for name, md5 in md5s if not check_integrity(str(folder / name), md5)]
        if failed:
            raise RuntimeError(f"CIFAR-100 file(s) {failed} in {folder} failed the md5 check. {self._layout_help()}")
        return CIFAR100

    def _layout_help(self) -> str:
        return (
            f"Expected torchvision's layout {Path(self.data_dir) / CIFAR100.base_folder}/{{train,test,meta}}. "
            "Pass download=True to fetch the original files. A copy whose files have different checksums "
            "(such as a reconstructed copy) needs verify_checksums=False."
        )


class _UncheckedCIFAR100(CIFAR100):
    """``CIFAR100`` whose integrity check only requires the files to exist (torchvision skips md5 when None)."""

    train_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR100.train_list]
    test_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR100.test_list]
    meta: ClassVar[dict[str, str | None]] = {**CIFAR100.meta, "md5": None}
