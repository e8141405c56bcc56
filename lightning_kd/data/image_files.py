"""An ``ImageFolder`` that checks what it indexes: empty class folders, and unreadable (corrupt) image files."""

import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["CheckedImageFolder", "CorruptImages", "find_unreadable_images", "load_rgb"]

CorruptImages = Literal["fail", "skip"]

# What PIL raises for a file it cannot identify (UnidentifiedImageError is an OSError), a truncated or damaged
# stream (OSError, SyntaxError from some decoders) or bad header values (ValueError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError)


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode an image file as RGB; raise a ``RuntimeError`` naming the file when that fails.

    Args:
        path: Image file.

    Returns:
        The decoded RGB image.

    Raises:
        RuntimeError: The file cannot be read or decoded.
    """
    try:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")  # convert() decodes while the file is open
    except _DECODE_ERRORS as err:
        raise RuntimeError(
            f"Cannot read the image file {path} ({type(err).__name__}: {err}). Replace or delete it, or pass "
            "corrupt_images='skip' to drop unreadable files before training (the data module then checks every "
            "file once in setup and lists the ones it drops)."
        ) from err


def _unreadable(path: str) -> str | None:
    """The reason ``path`` cannot be decoded, or ``None`` when it can."""
    try:
        with Image.open(path) as image:
            image.load()
    except _DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def find_unreadable_images(paths: Sequence[str], num_threads: int | None = None) -> dict[str, str]:
    """Decode every file once and return ``{path: reason}`` for those PIL cannot read.

    Decoding releases the GIL, so a thread pool scales with the cores. This reads every byte of the dataset:
    seconds for a small tree, minutes for ImageNet.

    Args:
        paths: Image files.
        num_threads: Threads to decode with; ``None`` uses ``min(16, cpu count)``.

    Returns:
        The unreadable files, in the order of ``paths``.
    """
    threads = num_threads or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(_unreadable, paths, chunksize=64))
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason is not None}


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` that refuses empty class folders and handles corrupt files as asked, never silently.

    Args:
        root: Root of the tree ``<root>/<class_name>/<image>``.
        transform: Transform of the decoded RGB image.
        split: Name of the split for messages (``"training"``, ``"validation"``, ``"test"``).
        corrupt_images: ``"fail"``: an unreadable file is an error (when read, or in the constructor with
            ``verify_images=True``). ``"skip"``: every file is decoded once here and the unreadable ones are
            dropped, with a warning that names them.
        verify_images: With ``"fail"``, decode every file here and list all unreadable ones in one error,
            instead of failing at the first one read during training.

    Raises:
        FileNotFoundError: A class folder holds no file with an image extension (before or after skipping).
        RuntimeError: ``corrupt_images="fail"``, ``verify_images=True`` and some files cannot be decoded.
    """

    def __init__(
        self,
        root: str,
        *,
        transform: Callable[[Any], Any] | None,
        split: str,
        corrupt_images: CorruptImages = "fail",
        verify_images: bool = False,
    ) -> None:
        # allow_empty: empty classes are reported by check_classes_have_images with a message of ours.
        super().__init__(root, transform=transform, loader=load_rgb, allow_empty=True)
        self.split = split
        self.skipped: dict[str, str] = {}
        if corrupt_images == "skip" or verify_images:
            unreadable = find_unreadable_images([path for path, _ in self.samples])
            if unreadable and corrupt_images == "fail":
                raise RuntimeError(
                    f"{len(unreadable)} image file(s) in the {split} folder {root} cannot be read: "
                    f"{_listing(unreadable)}. Replace or delete them, or pass corrupt_images='skip' to drop them."
                )
            if unreadable:
                self._drop(unreadable)
        self.check_classes_have_images()

    def _drop(self, unreadable: dict[str, str]) -> None:
        self.samples = [(path, target) for path, target in self.samples if path not in unreadable]
        self.imgs = self.samples
        self.targets = [target for _, target in self.samples]
        self.skipped = unreadable
        warnings.warn(
            f"Skipped {len(unreadable)} unreadable image file(s) in the {self.split} folder {self.root} "
            f"(corrupt_images='skip'): {_listing(unreadable)}.",
            UserWarning,
            stacklevel=4,
        )

    def check_classes_have_images(self) -> None:
        """Raise a ``FileNotFoundError`` naming the class folders that hold no (readable) image."""
        counts = Counter(self.targets)
        empty = [name for index, name in enumerate(self.classes) if counts[index] == 0]
        if empty:
            skipped = " after skipping unreadable files" if self.skipped else ""
            raise FileNotFoundError(
                f"{len(empty)} class folder(s) of the {self.split} folder {self.root} hold no image{skipped}: "
                f"{empty[:10]}{' ...' if len(empty) > 10 else ''} (image files end in {', '.join(IMG_EXTENSIONS)}). "
                "Add images to them, or delete the folders from every split (the class indices are the sorted "
                "folder names, so a class must exist in all splits)."
            )


def _listing(reasons: dict[str, str], limit: int = 10) -> str:
    items = [f"{path} ({reason})" for path, reason in list(reasons.items())[:limit]]
    more = f" and {len(reasons) - limit} more" if len(reasons) > limit else ""
    return "; ".join(items) + more
