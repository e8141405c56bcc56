"""Shared plumbing of the data modules: argument checks and one dataloader factory."""

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

__all__ = ["BaseDataModule", "check_positive_int"]


class BaseDataModule(LightningDataModule):
    """Base class of the image-classification data modules.

    Subclasses build ``train_set``, ``val_set`` and ``test_set`` in ``setup`` and set ``num_classes``,
    ``mean`` and ``std``. The dataloaders shuffle the training split only, pin memory when an accelerator is
    present, keep workers alive between epochs when there are any, and never add a ``DistributedSampler``
    (Lightning injects one under DDP). A dataset that stacks whole batches itself (it defines ``__getitems__``)
    names its collate function in a ``collate_fn`` attribute, which the loaders use.

    Args:
        batch_size: Samples per training batch.
        num_workers: Worker processes per dataloader; 0 loads in the main process.
        drop_last: Drop the last incomplete training batch. Evaluation batches are never dropped.
        val_batch_size: Samples per validation/test/predict batch; ``None`` uses ``batch_size``.
    """

    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: whether training samples are ``((weak, strong), target)`` (MLKD); subclasses that offer it set it
    two_views: bool = False

    @property
    def num_views(self) -> int:
        """Views of each training image (:class:`~lightning_kd.contracts.ViewsData`): 2 with ``two_views``, else 1."""
        return 2 if self.two_views else 1

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        drop_last: bool = False,
        val_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("batch_size", batch_size)
        if val_batch_size is not None:
            check_positive_int("val_batch_size", val_batch_size)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0 (0 loads in the main process), got {num_workers!r}.")
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        """Shuffled loader over the training split."""
        return self._dataloader(self._require(self.train_set, "train", "fit"), train=True)

    def val_dataloader(self) -> DataLoader:
        """Loader over the validation split, in order."""
        return self._dataloader(self._require(self.val_set, "validation", "fit' or 'validate"), train=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over the test split, in order."""
        return self._dataloader(self._require(self.test_set, "test", "test"), train=False)

    def predict_dataloader(self) -> DataLoader:
        """Loader over the test split, in order (predictions are made on the evaluation data)."""
        return self._dataloader(self._require(self.test_set, "test", "predict"), train=False)

    def _dataloader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        sampler = None
        if not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's default DistributedSampler pads the split with repeated samples to an equal share per
            # process, which biases evaluation metrics; this one gives every sample to exactly one process.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.val_batch_size,
            shuffle=train,
            sampler=sampler,
            collate_fn=getattr(dataset, "collate_fn", None),
            num_workers=self.num_workers,
            # Pinning without an accelerator only earns a warning from PyTorch.
            pin_memory=torch.accelerator.is_available(),
            # PyTorch rejects persistent_workers=True when num_workers == 0.
            persistent_workers=self.num_workers > 0,
            drop_last=self.drop_last and train,
        )

    def _require(self, dataset: Dataset | None, split: str, stage: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(
                f"The {split} split of {type(self).__name__} is not built yet: call setup('{stage}') first "
                "(the Trainer does this for you)."
            )
        return dataset


def check_positive_int(name: str, value: int) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a positive ``int``."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
