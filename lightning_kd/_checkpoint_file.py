"""A quick check that a checkpoint path names a readable ``torch.save`` file, without importing torch.

The CLI runs it on ``--ckpt_path`` before it builds its parser (seconds) and the model, so a typo or a truncated
download is one message at once instead of a traceback after the set-up.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

#: ``--ckpt_path`` values that Lightning resolves itself (not file names)
LIGHTNING_CKPT_ALIASES = ("best", "last", "hpc")


def check_checkpoint_file(path: str | os.PathLike, what: str = "--ckpt_path") -> Path:
    """Raise a one-line error unless ``path`` is an existing, complete ``torch.save`` file; return it as a Path.

    ``torch.save`` writes a zip archive (since torch 1.6); its central directory sits at the end of the file, so a
    truncated copy fails to open. Files of the legacy format (a pickle stream) are accepted unchecked.

    Raises:
        FileNotFoundError: no such file, or a directory.
        ValueError: the file is empty, truncated, or not ``torch.save`` output.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {str(path)!r} (no such file; relative paths start at {Path.cwd()})."
        )
    if path.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is a directory; give the checkpoint file inside it (*.ckpt).")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} cannot be read ({err.strerror}).") from None
    if not head:
        raise ValueError(
            f"{what} {str(path)!r} is empty (0 bytes): an interrupted save or copy? Use another checkpoint."
        )
    if head[:1] == b"\x80":  # a pickle stream: torch's legacy (pre-1.6) format
        return path
    if head[:2] != b"PK":
        raise ValueError(f"{what} {str(path)!r} is not a PyTorch checkpoint (not a torch.save file).")
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(
            f"{what} {str(path)!r} is truncated or corrupt ({err}); an interrupted save or download? "
            "Use another checkpoint (e.g. the run's last.ckpt) or copy it again."
        ) from None
    return path


def ckpt_path_in_argv(argv: list[str]) -> str | None:
    """The value of ``--ckpt_path`` on a command line (``--ckpt_path X`` or ``--ckpt_path=X``; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
    return value


def is_checkpoint_file_name(value: str | None) -> bool:
    """Whether a ``ckpt_path`` value names a local file (not ``None``/``null``, an alias, or a URL/registry)."""
    if value is None or value in ("", "null", "None") or value in LIGHTNING_CKPT_ALIASES:
        return False
    return not (value.startswith("registry") or "://" in value)
