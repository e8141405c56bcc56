"""A teacher-logit cache: the teacher's logits for every (training image, augmented view), read instead of running it.

The reference CIFAR augmentation (zero padding 4, a 32x32 crop, a horizontal flip) has exactly ``9 * 9 * 2 = 162``
distinct views of each image, so the teacher's logits for all of them (50,000 x 162 forwards, inference only) cost
fewer forwards than one 240-epoch run computes, and every further run with that teacher reads them for free. A data
module that keys each training sample's view (``CIFAR100DataModule(device_augment=True, view_keys=True)``, the
:class:`~lightning_kd.contracts.KeyedViewsData` contract) hands the keys ``index * 162 + view`` to the step, and
:class:`CachedTeacher` gathers the rows: a fit with the cache computes the same student weights as without it (on
the CPU in float32; the logits were computed by the same teacher on the same pixels).

The file is a NumPy ``.npy`` array of shape ``(num_images * num_views, num_classes)`` in float32 (memory-mapped, so
processes on one machine share the operating system's page cache and hold no private copy), beside a JSON sidecar
``<file>.json`` with the metadata a run is checked against (:func:`cache_metadata`): the teacher's architecture and a
SHA-256 of its weights, the training data's fingerprint, the augmentation, the normalization, the class count and
the precision, plus the build's progress. ``lightning-kd cache-teacher`` writes it
(:mod:`lightning_kd.apps.cache_teacher`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_kd.contracts import KeyedViewsData, ViewSpace
from lightning_kd.teacher import Teacher, TeacherOutput

__all__ = [
    "CACHE_FORMAT",
    "CachedTeacher",
    "TeacherLogitCache",
    "cache_metadata",
    "differing_fields",
    "metadata_path",
    "teacher_fingerprint",
]

#: the ``format`` field of every cache's metadata
CACHE_FORMAT = "lightning-kd teacher logits"
#: the version of the file layout
CACHE_VERSION = 1
#: the metadata fields that must match between a cache and a run (dotted paths into the metadata)
COMPARED_FIELDS = (
    "teacher.architecture",
    "teacher.weights_sha256",
    "num_classes",
    "data.fingerprint",
    "data.num_images",
    "augmentation.image_size",
    "augmentation.padding",
    "augmentation.flips",
    "augmentation.num_views",
    "normalization.mean",
    "normalization.std",
    "precision",
)


def metadata_path(path: str | Path) -> Path:
    """The JSON sidecar of a cache file: ``<file>.json``."""
    return Path(f"{path}.json")


def teacher_fingerprint(network: nn.Module) -> str:
    """SHA-256 of a network's state (every parameter and buffer: names, dtypes, shapes and values).

    Two teachers with the same fingerprint compute the same logits; a changed BatchNorm statistic changes it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        # bytes of the values (a uint8 view works for every dtype, bfloat16 included)
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_metadata(
    *, architecture: Any, weights_sha256: str, num_classes: int, space: ViewSpace, precision: str = "float32"
) -> dict[str, Any]:
    """The metadata a cache for this teacher and data must carry (without the build's progress).

    Args:
        architecture: the teacher as recorded by the module (a model name, a class path, or a list of them).
        weights_sha256: :func:`teacher_fingerprint` of the teacher network.
        num_classes: the logits' width.
        space: the data module's :class:`~lightning_kd.contracts.ViewSpace`.
        precision: the dtype the logits are computed and stored in.
    """
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": {"architecture": architecture, "weights_sha256": weights_sha256},
        "num_classes": int(num_classes),
        "data": {"fingerprint": space.data_fingerprint, "num_images": space.num_images},
        "augmentation": {
            "image_size": space.image_size,
            "padding": space.padding,
            "flips": space.flips,
            "num_views": space.num_views,
            "key": space.view_order,
        },
        "normalization": {"mean": list(space.mean), "std": list(space.std)},
        "precision": precision,
        "shape": [space.num_images * space.num_views, int(num_classes)],
    }


def _field(metadata: Mapping[str, Any], dotted: str) -> Any:
    value: Any = metadata
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def differing_fields(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """One line per compared field whose value differs: ``"<field>: the cache has X, this run has Y"``."""
    lines = []
    for name in COMPARED_FIELDS:
        have, want = _field(found, name), _field(expected, name)
        if have != want:
            lines.append(f"{name}: the cache has {have!r}, this run has {want!r}")
    return lines


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a cache file.

    Raises:
        FileNotFoundError: the cache or its sidecar is missing.
        ValueError: the sidecar is not a cache's metadata.
    """
    path = Path(path)
    sidecar = metadata_path(path)
    if not path.is_file() or not sidecar.is_file():
        missing = path if not path.is_file() else sidecar
        raise FileNotFoundError(
            f"teacher_cache {str(path)!r}: {missing} does not exist. Build the cache first with "
            f"`lightning-kd cache-teacher --config PRESET --output {path}`."
        )
    try:
        metadata = json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"teacher_cache metadata {sidecar} is not valid JSON ({err}): rebuild the cache.") from err
    if not isinstance(metadata, dict) or metadata.get("format") != CACHE_FORMAT:
        raise ValueError(f"{sidecar} is not the metadata of a lightning-kd teacher cache (format {CACHE_FORMAT!r}).")
    if metadata.get("version") != CACHE_VERSION:
        raise ValueError(
            f"teacher cache {path} has layout version {metadata.get('version')!r}; this version of lightning-kd reads "
            f"version {CACHE_VERSION}: rebuild it with `lightning-kd cache-teacher`."
        )
    return metadata


class TeacherLogitCache:
    """A complete cache file, memory-mapped read-only; rows are gathered by view key.

    Args:
        path: the ``.npy`` file (its metadata is ``<path>.json``).

    Raises:
        FileNotFoundError: the file or its metadata is missing.
        ValueError: not a cache, an unfinished build, or a file whose shape disagrees with its metadata.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        progress = self.metadata.get("progress", {})
        if not progress.get("complete"):
            raise ValueError(
                f"teacher cache {self.path} is incomplete ({progress.get('images_done', 0)} of "
                f"{_field(self.metadata, 'data.num_images')} images done): its build was interrupted. Run the same "
                f"`lightning-kd cache-teacher --config PRESET --output {self.path}` again; it resumes where it stopped."
            )
        array = np.load(self.path, mmap_mode="r")
        expected_shape = tuple(self.metadata["shape"])
        if array.shape != expected_shape or array.dtype != np.float32:
            raise ValueError(
                f"teacher cache {self.path} holds a {array.dtype} array of shape {array.shape}, but its metadata says "
                f"float32 {expected_shape}: the file is damaged or not this metadata's; rebuild it."
            )
        self._array = array
        with warnings.catch_warnings():
            # a read-only memory map: torch warns that the tensor is not writable; nothing ever writes to it
            warnings.simplefilter("ignore", UserWarning)
            self._host = torch.from_numpy(array)
        self._table = self._host

    @property
    def memory_mapped(self) -> bool:
        """Whether lookups read the file's memory map (no private copy of the logits in this process)."""
        return isinstance(self._array, np.memmap) and self._table is self._host

    @property
    def device(self) -> torch.device:
        """Where the lookups gather (see :meth:`place`)."""
        return self._table.device

    @property
    def num_views(self) -> int:
        """Views per image in the cache's key space."""
        return int(_field(self.metadata, "augmentation.num_views"))

    def compared_metadata(self) -> dict[str, Any]:
        """The metadata without the build's progress (what a checkpoint records)."""
        return {k: v for k, v in self.metadata.items() if k != "progress"}

    def check(self, expected: Mapping[str, Any]) -> None:
        """Refuse a cache made for another teacher, data, augmentation, normalization or precision.

        Raises:
            ValueError: naming every field that differs, with both values.
        """
        differ = differing_fields(self.metadata, expected)
        if differ:
            raise ValueError(
                f"teacher_cache {self.path} does not match this run: " + "; ".join(differ) + ". Build a cache for "
                "this teacher and data (`lightning-kd cache-teacher --config PRESET --output NEW_FILE`), or drop "
                "teacher_cache to run the teacher."
            )

    def place(self, device: torch.device) -> None:
        """Where the lookups happen: the memory map for a CPU run; a copy on an accelerator (gathers on the device,
        inside a CUDA graph too). On one GPU the copy takes ``num_images * num_views * num_classes * 4`` bytes of
        device memory (3.24 GB for CIFAR-100)."""
        device = torch.device(device)
        if device.type == "cpu":
            self._table = self._host
        elif self._table.device != device:
            self._table = self._host.to(device)

    def lookup(self, keys: Tensor) -> Tensor:
        """The cached float32 logits ``(B, K)`` of the given view keys (a gather, no host sync on the device)."""
        return self._table.index_select(0, keys.to(self._table.device))


class CachedTeacher(Teacher):
    """The teacher component of a fit that reads the teacher's training logits from a :class:`TeacherLogitCache`.

    Training steps read the rows of their batch's view keys (the batch's third element) instead of running the
    networks; validation, test and predict run the teacher networks as :class:`~lightning_kd.teacher.Teacher` does.
    The networks stay registered (for evaluation and for the weights fingerprint the cache is checked against).

    Args:
        owner: the module registering the teacher network.
        path: the cache file.
        available: whether the teacher's trained weights are loaded.
        fold_bn: evaluate through BatchNorm-folded copies.
    """

    def __init__(
        self, owner: nn.Module, path: str | Path, *, available: bool, fold_bn: bool, input_size: int | None = None
    ) -> None:
        super().__init__(owner, available=available, fold_bn=fold_bn, input_size=input_size)
        self.path = Path(path)
        self.cache: TeacherLogitCache | None = None

    def setup_fit(self, module: Any, datamodule: Any) -> None:
        """Check that the fit can read the cache (a one-view loss, keyed views), then open and check it.

        Raises:
            ValueError: a multi-view loss, data without view keys, or a cache whose metadata differs from the run's.
        """
        if module.loss.num_views != 1:
            raise ValueError(
                f"teacher_cache cannot serve {type(module.loss).__name__}: it takes {module.loss.num_views} views of "
                "each image, and the strong view's RandAugment and Cutout have no finite set of views to cache. Drop "
                "teacher_cache for this loss."
            )
        space = datamodule.view_space() if isinstance(datamodule, KeyedViewsData) else None
        if space is None or not datamodule.view_keys:
            name = type(datamodule).__name__ if datamodule is not None else "no data module"
            raise ValueError(
                f"teacher_cache {str(self.path)!r} reads the teacher's logits by each training sample's view, but "
                f"{name} does not key its views. Use CIFAR100DataModule with device_augment: true and view_keys: "
                "true (--data.init_args.device_augment true --data.init_args.view_keys true, or add the overlay "
                "configs/cifar100/cached.yaml)."
            )
        self.open(module.teacher_cache_metadata(space))

    def place(self, device: torch.device) -> None:
        """Lookups on the training device: a copy of the logits on a GPU, the memory map on a CPU."""
        if self.cache is not None:
            self.cache.place(device)

    def checkpoint_record(self) -> dict[str, Any] | None:
        """The cache's metadata (never its logits)."""
        return None if self.cache is None else self.cache.compared_metadata()

    def check_checkpoint_record(self, recorded: dict[str, Any] | None) -> None:
        """A resumed fit must read the cache the checkpoint was trained with.

        Raises:
            ValueError: the checkpoint's cache metadata differs from the open cache's, naming the fields.
        """
        if self.cache is None or recorded is None:
            return
        try:
            self.cache.check(recorded)
        except ValueError as err:
            raise ValueError(f"Resuming from a checkpoint trained with another teacher cache: {err}") from None

    def open(self, expected: Mapping[str, Any]) -> TeacherLogitCache:
        """Open the cache and check it against the run's metadata (see :meth:`TeacherLogitCache.check`)."""
        cache = TeacherLogitCache(self.path)
        cache.check(expected)
        self.cache = cache
        return cache

    def step_extras(self, batch_extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The batch's view keys, which the step gathers the logits by.

        Raises:
            ValueError: a training batch without view keys.
        """
        if len(batch_extras) != 1:
            raise ValueError(
                f"teacher_cache reads the teacher's logits by each sample's view key, but the training batch has "
                f"{len(batch_extras)} element(s) beyond (inputs, targets). Use CIFAR100DataModule with "
                "device_augment: true and view_keys: true (configs/cifar100/cached.yaml)."
            )
        return batch_extras

    def outputs(self, inputs: Any, extras: tuple[Tensor, ...] = ()) -> TeacherOutput:
        """Training (``extras`` holds view keys): the cached logits; evaluation (no extras): the teacher's forward."""
        if not extras:
            return super().outputs(inputs, extras)
        if self.cache is None:
            raise RuntimeError("the teacher cache is not open: the module opens it in setup('fit').")
        logits = self.cache.lookup(extras[0])
        return TeacherOutput(logits, (logits,))
