"""ImageNet (ILSVRC-2012) from local ``train/`` and ``val/`` ImageFolder trees."""

from pathlib import Path

from lightning_kd.data.image_files import CorruptImages
from lightning_kd.data.imagefolder import ImageFolderDataModule
from lightning_kd.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ImageNetDataModule"]


class ImageNetDataModule(ImageFolderDataModule):
    """ImageNet with the reference transforms: ``RandomResizedCrop(224)`` + flip; ``Resize(256)`` + ``CenterCrop(224)``.

    Expects ``<data_dir>/train/<wnid>/*.JPEG`` and ``<data_dir>/val/<wnid>/*.JPEG`` (the validation images sorted
    into one sub-folder per class, like the training ones). Nothing is downloaded. ``num_classes`` is the number
    of class folders under ``train/`` (1000 for the full dataset). Validation and test use ``val/``.
    Normalization: mean ``(0.485, 0.456, 0.406)``, std ``(0.229, 0.224, 0.225)``.

    Args:
        data_dir: Folder that contains ``train/`` and ``val/``.
        batch_size: Samples per training batch.
        num_workers: Worker processes per dataloader.
        drop_last: Drop the last incomplete training batch.
        val_batch_size: Samples per validation/test batch; ``None`` uses ``batch_size``.
        two_views: Training samples become ``((weak, strong), target)`` for MLKD (see
            :class:`ImageFolderDataModule`).
        corrupt_images: ``"fail"`` (default) or ``"skip"`` unreadable image files (see
            :class:`ImageFolderDataModule`).
        verify_images: Decode every file in ``setup`` and report all unreadable ones before training.
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 256,
        num_workers: int = 8,
        drop_last: bool = False,
        val_batch_size: int | None = None,
        two_views: bool = False,
        corrupt_images: CorruptImages = "fail",
        verify_images: bool = False,
    ) -> None:
        self.data_dir = str(data_dir)  # read by _layout_help while the base class lists the classes
        super().__init__(
            train_dir=str(Path(data_dir) / "train"),
            val_dir=str(Path(data_dir) / "val"),
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            drop_last=drop_last,
            val_batch_size=val_batch_size,
            two_views=two_views,
            corrupt_images=corrupt_images,
            verify_images=verify_images,
        )

    def _layout_help(self) -> str:
        return (
            f"Expected the ImageNet layout <data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG "
            f"with data_dir={self.data_dir} (validation images sorted into wnid sub-folders). "
            "ImageNet is not downloaded automatically."
        )
