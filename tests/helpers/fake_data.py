"""Small fake datasets written in the exact on-disk formats the data modules read.

``write_fake_cifar100`` reproduces the original CIFAR-100 pickles, which were written by Python 2: protocol 2,
dictionary keys and strings stored as Python 2 ``str`` (``pickle.load(..., encoding="latin1")`` turns them into
``str``, as torchvision expects), and ``data`` an ``N x 3072`` uint8 array holding the R, G and B planes row-major.
``write_fake_image_folder`` writes real image files with PIL; ``corrupt_image_file`` damages one of them the two
ways files get damaged in practice (a truncated copy, or bytes that are not an image at all).
"""

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["corrupt_image_file", "write_fake_cifar100", "write_fake_image_folder"]


class _Py2Str(bytes):
    """Bytes that are pickled the way Python 2 pickled its ``str``."""


class _Py2Pickler(pickle._Pickler):
    """Pure-Python pickler that writes ``_Py2Str`` with the Python 2 string opcodes."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: _Py2Str) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2_str

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):  # store the raw pixel buffer as a Python 2 str, like the real files
            constructor, args, state = obj.__reduce__()
            return constructor, args, (*state[:-1], _Py2Str(state[-1]))
        return NotImplemented


def _py2(value: Any) -> Any:
    """Turn the ``str`` keys and values of a CIFAR record into Python 2 strings."""
    if isinstance(value, str):
        return _Py2Str(value.encode("latin1"))
    if isinstance(value, dict):
        return {_py2(key): _py2(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_py2(item) for item in value]
    return value


def _dump(record: dict[str, Any], path: Path) -> None:
    with path.open("wb") as file:
        _Py2Pickler(file, protocol=2).dump(_py2(record))


def _split(name: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    fine = rng.permutation(np.arange(n) % 100)  # every class present once n >= 100
    return {
        "filenames": [f"fake_{name}_{i:05d}.png" for i in range(n)],
        "batch_label": "training batch 1 of 1" if name == "train" else "testing batch 1 of 1",
        "fine_labels": [int(label) for label in fine],
        "coarse_labels": [int(label) // 5 for label in fine],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }


def write_fake_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``<root>/cifar-100-python/{train,test,meta}`` with random pixels and cyclic labels.

    The files load with ``torchvision.datasets.CIFAR100`` but fail its md5 check.

    Args:
        root: Folder to write ``cifar-100-python/`` into (the data modules' ``data_dir``).
        n_train: Number of training images.
        n_test: Number of test images.
        seed: Seed of the pixels and of the label order.

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _dump(_split("train", n_train, rng), folder / "train")
    _dump(_split("test", n_test, rng), folder / "test")
    meta = {
        "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
    }
    _dump(meta, folder / "meta")
    return root


def write_fake_image_folder(
    root: str | Path,
    classes: Sequence[str],
    n_per_class: int = 2,
    size: tuple[int, int] = (40, 30),
    extension: str = "png",
    seed: int = 0,
) -> Path:
    """Write an ``ImageFolder`` tree ``<root>/<class>/<i>.<extension>`` of random RGB images.

    Args:
        root: Root of the tree.
        classes: Class sub-folder names.
        n_per_class: Images per class.
        size: Image ``(width, height)`` in pixels.
        extension: File extension; PIL picks the format from it (``png``, ``JPEG``, ...).
        seed: Seed of the pixels.

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    width, height = size
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{extension}")
    return root


def corrupt_image_file(path: str | Path, kind: str = "truncated") -> Path:
    """Damage an image file in place so that PIL cannot decode it.

    Args:
        path: An existing image file.
        kind: ``"truncated"`` keeps the first half of the file (PIL recognizes the header and then fails to
            decode); ``"garbage"`` replaces the content with bytes no image format starts with.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    if kind == "truncated":
        content = path.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    else:
        raise ValueError(f"kind must be 'truncated' or 'garbage', got {kind!r}.")
    return path
