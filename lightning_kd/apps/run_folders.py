"""Run folders: every ``fit`` its own versioned folder, evaluations beside it, and a ``latest`` link.

Layout (the shipped configs' CSVLogger with ``save_dir: runs/<group>``, ``name: <name>`` and no ``version``)::

    runs/<group>/<name>/
        version_0/  config.yaml  hparams.yaml  metrics.csv  checkpoints/{best,last}.ckpt
        version_1/  ...          test_0/{config.yaml,hparams.yaml,metrics.csv}   # `test --ckpt_path version_1/...`
        latest -> version_1                                                    # the newest fit

A rerun never writes into an earlier run's folder, so ``best.ckpt`` of each folder is that run's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["LATEST", "find_run_folder", "latest_run", "next_stage_folder", "update_latest"]

#: name of the link (or, where links are not allowed, the text file) that points at the newest fit run
LATEST = "latest"
# files that only a run folder written by a Lightning logger / the CLI holds
_RUN_MARKERS = ("hparams.yaml", "metrics.csv", "config.yaml")


def find_run_folder(ckpt_path: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint was saved in (``<run>/checkpoints/<file>.ckpt``), or ``None``.

    Links (``latest``) are resolved, so the returned folder is the versioned one.
    """
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.parent.name != "checkpoints" or not any((run / marker).is_file() for marker in _RUN_MARKERS):
        return None
    return run


def next_stage_folder(run: Path, stage: str) -> str:
    """The first free ``<stage>_K`` sub-folder name of ``run`` (``test_0``, ``test_1``, ...)."""
    taken = {int(m.group(1)) for p in run.iterdir() if (m := re.fullmatch(rf"{re.escape(stage)}_(\d+)", p.name))}
    return f"{stage}_{next(k for k in range(len(taken) + 1) if k not in taken)}"


def update_latest(run: Path) -> Path:
    """Point ``<run's parent>/latest`` at ``run`` (a relative link), replacing the previous link atomically.

    Where the file system refuses links, ``latest`` becomes a text file holding the run folder's path.

    Returns:
        The ``latest`` entry.

    Raises:
        ValueError: if ``latest`` exists and is a real directory (it is never deleted).
    """
    latest = run.parent / LATEST
    if latest.is_dir() and not latest.is_symlink():
        raise ValueError(f"{latest} is a directory, not a link: move it away so it can point at the newest run.")
    temporary = run.parent / f".{LATEST}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(run.name, target_is_directory=True)
        os.replace(temporary, latest)
    except OSError:
        temporary.unlink(missing_ok=True)
        latest.write_text(f"{run}\n")
    return latest


def latest_run(folder: str | os.PathLike) -> Path:
    """The run folder ``<folder>/latest`` points at (a link, or a text file holding the path).

    Raises:
        FileNotFoundError: if ``folder`` has no ``latest`` entry (no ``fit`` finished there yet).
    """
    latest = Path(folder) / LATEST
    if latest.is_symlink() or latest.is_dir():
        return latest.resolve()
    if latest.is_file():
        return Path(latest.read_text().strip())
    raise FileNotFoundError(f"{latest} does not exist: no `lightning-kd fit` has finished in {folder} yet.")
