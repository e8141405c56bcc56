"""CIFAR-100 in torchvision's on-disk format, with the reference augmentation and normalization."""

import hashlib
import pickle
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_integrity
from typing_extensions import override

from lightning_kd.contracts import ViewSpace
from lightning_kd.data.base import BaseDataModule, check_positive_int
from lightning_kd.data.device_augment import (
    UInt8ImageDataset,
    augment_uint8_batch,
    normalize_uint8_batch,
    num_crop_flip_views,
    random_crop_flip_params,
    view_ids,
)
from lightning_kd.data.randaugment import TwoViews
from lightning_kd.data.transforms import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar_eval_transform,
    cifar_strong_transform,
    cifar_train_transform,
    pycls_eval_transform,
    pycls_train_transform,
    require_timm,
)

__all__ = ["AUGMENTATIONS", "CIFAR100DataModule"]

#: the values of ``CIFAR100DataModule(augmentation=...)``
AUGMENTATIONS = ("reference", "pycls")


class CIFAR100DataModule(BaseDataModule):
    """CIFAR-100 (50,000 training and 10,000 test images of 32x32 pixels, 100 classes).

    Reads ``<data_dir>/cifar-100-python/{train,test,meta}`` through ``torchvision.datasets.CIFAR100``.
    Training uses the reference augmentation (random crop 32 with padding 4, horizontal flip); validation and
    test both use the CIFAR-100 test split, as the paper reports. Normalization uses the reference constants
    ``mean=(0.5071, 0.4867, 0.4408)``, ``std=(0.2675, 0.2565, 0.2761)``.

    ``augmentation="pycls"`` switches to the pipeline of the paper's ViT table (its ``tiny-transformers`` code):
    images scaled up to ``image_size`` (224 for the ViT students, 32 for their ResNet-56 teacher), the "strong"
    training augmentation (:func:`~lightning_kd.data.transforms.pycls_train_transform`: random resized crop,
    flip, RandAugment, random erasing), evaluation images resized to ``image_size`` without a crop
    (:func:`~lightning_kd.data.transforms.pycls_eval_transform`), and the ImageNet normalization constants
    (``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``) the reference uses for CIFAR-100 too.
    The reference's batch-level Mixup / CutMix and label smoothing are not offered (they turn targets into soft
    labels); its ViT configs leave all three off.

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
        two_views: Training samples become ``((weak, strong), target)`` for MLKD: ``weak`` is the reference
            augmentation, ``strong`` draws its own crop and flip and adds RandAugment (2 ops) and Cutout
            (:func:`~lightning_kd.data.transforms.cifar_strong_transform`). Validation and test stay single-view.
        device_augment: Keep the images in memory as one uint8 tensor, load uint8 batches (a batch is one
            indexed gather, no PIL, no per-sample transform), and run the reference augmentation on the
            batch's device in :meth:`on_after_batch_transfer` (:func:`~lightning_kd.data.device_augment.
            augment_uint8_batch`): zero padding 4, a uniform random 32x32 crop, a flip with probability 1/2,
            then ``/255`` and the reference normalization. Evaluation batches are only normalized. Use it on a
            GPU, where per-image PIL work is the bottleneck; ``num_workers=0`` suffices then (a batch costs one
            memory copy). Batches read from the dataloaders directly are raw uint8 until the hook runs. The
            dataset stays map-style, so under DDP Lightning's ``DistributedSampler`` gives each rank its own
            shard. Cannot be combined with ``two_views`` (RandAugment is a PIL pipeline).
        view_keys: With ``device_augment=True``, training batches become ``(images, targets, keys)``: ``keys`` are
            ``(B,)`` int64, each sample's dataset index times 162 plus the id of its drawn view (crop corner and
            flip, :func:`~lightning_kd.data.device_augment.view_ids`). A teacher-logit cache
            (``DistillationModule(teacher_cache=...)``) reads the teacher's logits by these keys; the augmentation
            drawn is the same as without keys. Evaluation batches stay ``(images, targets)``.
        augmentation: ``"reference"`` (the default: the mdistiller CIFAR recipe above, at 32 px) or ``"pycls"``
            (the ViT table's pipeline, at ``image_size``; needs timm). ``"pycls"`` cannot be combined with
            ``two_views`` or ``device_augment``.
        image_size: Side in pixels of the training and evaluation images. 32 (the native size) with
            ``"reference"``; at least 32 with ``"pycls"`` (224 for the ViT students).

    Raises:
        ValueError: An unknown ``augmentation``, an ``image_size`` the augmentation does not support, or options
            that cannot be combined.
        ImportError: ``augmentation="pycls"`` without timm installed.
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
        two_views: bool = False,
        device_augment: bool = False,
        view_keys: bool = False,
        augmentation: str = "reference",
        image_size: int = 32,
    ) -> None:
        super().__init__(batch_size, num_workers, drop_last=drop_last, val_batch_size=val_batch_size)
        _check_augmentation(augmentation, image_size, two_views=two_views, device_augment=device_augment)
        if two_views and device_augment:
            raise ValueError(
                "two_views=True and device_augment=True cannot be combined: the strong view's RandAugment and "
                "Cutout are a per-image PIL pipeline, while device_augment only does crop and flip on the device. "
                "For MLKD set two_views=True and device_augment=False."
            )
        if view_keys and not device_augment:
            raise ValueError(
                "view_keys=True needs device_augment=True: only the batch augmentation on the device draws each "
                "image's crop and flip explicitly (the per-image PIL pipeline does not report what it drew). Set "
                "--data.init_args.device_augment true (configs/cifar100/cached.yaml does both)."
            )
        self.two_views = two_views
        self.device_augment = device_augment
        self.view_keys = bool(view_keys)
        self.augmentation = augmentation
        self.image_size = image_size
        self._fingerprint: str | None = None
        self._normalization: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self.data_dir = str(data_dir)
        self.download = download
        self.verify_checksums = verify_checksums
        self.num_classes = 100
        # the ViT table's code normalizes CIFAR-100 with the ImageNet constants (docs/sources.md §7.2)
        self.mean = IMAGENET_MEAN if augmentation == "pycls" else CIFAR100_MEAN
        self.std = IMAGENET_STD if augmentation == "pycls" else CIFAR100_STD

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
            FileNotFoundError: When ``data_dir`` is missing or empty, or ``cifar-100-python/`` or one of its files
                is missing.
            RuntimeError: When ``verify_checksums=True`` and a file fails the md5 check, or a file cannot be
                unpickled.
        """
        need_train = stage in (None, "fit") and self.train_set is None
        if not need_train and self.val_set is not None:
            return
        dataset_cls = self._dataset_class()
        if need_train:
            self.train_set = self._split(dataset_cls, train=True)
        if self.val_set is None:
            self.val_set = self._split(dataset_cls, train=False)
        self.test_set = self.val_set

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``device_augment=True``, augment (training) or only normalize (evaluation) the uint8 batch.

        Lightning calls this on the batch once it is on the model's device (this data module's hook replaces a
        LightningModule's ``on_after_batch_transfer``, with a warning from Lightning, when both define one).
        Whether the batch is a training batch is read from ``self.trainer.training`` (false during validation
        inside ``fit``); without a trainer the batch is only normalized.
        """
        if not self.device_augment:
            return batch
        images, targets, *indices = batch
        training = self.trainer is not None and self.trainer.training
        if training and indices:
            images, views = self.device_transform(images, training=True, return_views=True)
            return images, targets, indices[0].to(views.device) * self.num_crop_views + views
        return self.device_transform(images, training=training), targets

    #: the zero border of the training crop (the reference's 4)
    padding: ClassVar[int] = 4

    @property
    def num_crop_views(self) -> int:
        """Distinct training views of an image: ``(2 * 4 + 1)^2`` crop corners times 2 flips = 162."""
        return num_crop_flip_views(self.padding)

    def device_transform(
        self, images: Tensor, *, training: bool, return_views: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The ``device_augment`` transform of a ``(B, 3, 32, 32)`` uint8 batch, on the batch's device.

        Args:
            images: Raw uint8 pixels.
            training: Draw a random crop (zero padding 4) and flip per image before normalizing.
            return_views: Also return each image's drawn view id (training only).

        Returns:
            ``(B, 3, 32, 32)`` float32 normalized images; with ``return_views`` also the ``(B,)`` int64 view ids.
        """
        mean, std = self._normalization_on(images.device)
        if not training:
            return normalize_uint8_batch(images, mean, std)
        offsets, flips = random_crop_flip_params(images.shape[0], padding=self.padding, device=images.device)
        augmented = augment_uint8_batch(images, offsets, flips, mean, std, padding=self.padding)
        return (augmented, view_ids(offsets, flips, self.padding)) if return_views else augmented

    def view_space(self) -> ViewSpace | None:
        """The training views' key space (:class:`~lightning_kd.contracts.KeyedViewsData`), after ``setup("fit")``.

        ``None`` without ``device_augment`` (the PIL pipeline's draws are not reported). The data fingerprint is the
        SHA-256 of the training images and labels as loaded (computed once; about 0.3 s for CIFAR-100).

        Raises:
            RuntimeError: before ``setup("fit")`` loaded the training split.
        """
        if not self.device_augment:
            return None
        if not isinstance(self.train_set, UInt8ImageDataset):
            raise RuntimeError("view_space() needs the training split: call setup('fit') first.")
        if self._fingerprint is None:
            self._fingerprint = uint8_data_fingerprint(self.train_set.images, self.train_set.targets)
        return ViewSpace(
            num_images=len(self.train_set),
            num_views=self.num_crop_views,
            image_size=int(self.train_set.images.shape[-1]),
            padding=self.padding,
            flips=True,
            mean=tuple(float(m) for m in self.mean),
            std=tuple(float(s) for s in self.std),
            data_fingerprint=self._fingerprint,
        )

    def _normalization_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # Cached per device: creating them per batch would copy host memory to the device at every step.
        if device not in self._normalization:
            self._normalization[device] = (
                torch.tensor(self.mean, dtype=torch.float32, device=device),
                torch.tensor(self.std, dtype=torch.float32, device=device),
            )
        return self._normalization[device]

    def _split(self, dataset_cls: type[CIFAR100], *, train: bool) -> Any:
        """One split as the options ask: PIL images with transforms, or in-memory uint8 tensors."""
        if self.device_augment:
            raw = self._read(dataset_cls, train=train, transform=None)
            images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            targets = torch.tensor(raw.targets, dtype=torch.long)
            return UInt8ImageDataset(images, targets, with_indices=train and self.view_keys)
        if self.augmentation == "pycls":
            build = pycls_train_transform if train else pycls_eval_transform
            transform = build(self.image_size, self.mean, self.std)
        elif not train:
            transform = cifar_eval_transform(self.mean, self.std)
        elif self.two_views:
            transform = TwoViews(
                cifar_train_transform(self.mean, self.std), cifar_strong_transform(self.mean, self.std)
            )
        else:
            transform = cifar_train_transform(self.mean, self.std)
        return self._read(dataset_cls, train=train, transform=transform)

    def _read(self, dataset_cls: type[CIFAR100], *, train: bool, transform: Any) -> CIFAR100:
        try:
            return dataset_cls(self.data_dir, train=train, transform=transform)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            # Files that pass the existence (and optionally md5) check but are truncated or not CIFAR pickles.
            split = "train" if train else "test"
            raise RuntimeError(
                f"CIFAR-100 file {Path(self.data_dir) / CIFAR100.base_folder / split} could not be read "
                f"({type(err).__name__}: {err}): it is truncated or not a CIFAR-100 pickle. {self._layout_help()}"
            ) from err

    def _dataset_class(self) -> type[CIFAR100]:
        """Check the files on disk and pick the dataset class; raise the layout error when they do not pass."""
        root = Path(self.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"The CIFAR-100 data_dir {root} does not exist. {self._layout_help()}")
        if not any(root.iterdir()):
            raise FileNotFoundError(f"The CIFAR-100 data_dir {root} is empty. {self._layout_help()}")
        folder = root / CIFAR100.base_folder
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


def _check_augmentation(augmentation: str, image_size: int, *, two_views: bool, device_augment: bool) -> None:
    """Refuse an unknown augmentation, an image size it cannot produce, and combinations it does not support."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {augmentation!r}: use 'reference' (the CIFAR crop-and-flip recipe at 32 px) or "
            "'pycls' (the ViT table's pipeline at image_size, e.g. 224)."
        )
    check_positive_int("image_size", image_size)
    if augmentation == "reference" and image_size != 32:
        raise ValueError(
            f"image_size={image_size} needs augmentation='pycls': the reference augmentation crops the native "
            "32x32 images and has no resize. Set --data.init_args.augmentation pycls (the ViT presets do), or "
            "image_size 32."
        )
    if augmentation == "pycls" and image_size < 32:
        raise ValueError(
            f"image_size={image_size} is below CIFAR's native 32 pixels; augmentation='pycls' scales images up "
            "(224 for the ViT students, 32 for their ResNet-56 teacher). Use an image_size of at least 32."
        )
    if augmentation == "pycls" and two_views:
        raise ValueError(
            "augmentation='pycls' cannot be combined with two_views=True: MLKD's two views are built from the "
            "reference augmentation. Set two_views false, or augmentation 'reference'."
        )
    if augmentation == "pycls" and device_augment:
        raise ValueError(
            "augmentation='pycls' cannot be combined with device_augment=True: its RandAugment and resized crops "
            "are a per-image PIL pipeline, while device_augment only does the reference crop and flip on the "
            "device. Set device_augment false, or augmentation 'reference'."
        )
    if augmentation == "pycls":
        require_timm("CIFAR100DataModule(augmentation='pycls')")


def uint8_data_fingerprint(images: Tensor, targets: Tensor) -> str:
    """SHA-256 of a uint8 image tensor and its labels (shapes included): the identity of a training split."""
    digest = hashlib.sha256()
    digest.update(repr((tuple(images.shape), tuple(targets.shape))).encode())
    digest.update(images.contiguous().numpy())  # the buffer itself, no copy
    digest.update(targets.to(torch.int64).contiguous().numpy())
    return digest.hexdigest()


class _UncheckedCIFAR100(CIFAR100):
    """``CIFAR100`` whose integrity check only requires the files to exist (torchvision skips md5 when None)."""

    train_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR100.train_list]
    test_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR100.test_list]
    meta: ClassVar[dict[str, str | None]] = {**CIFAR100.meta, "md5": None}
