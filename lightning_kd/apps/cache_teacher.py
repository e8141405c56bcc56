"""``lightning-kd cache-teacher``: compute a preset's teacher logits for every (training image, view) once.

Usage::

    lightning-kd cache-teacher --config configs/cifar100/kd_ls/resnet32x4_resnet8x4.yaml [--output FILE]
        [--batch-size 1024] [--device auto|cpu|cuda] [--KEY VALUE ...]

The preset is read as ``fit`` reads it (later ``--config`` files and ``--KEY VALUE`` flags win), with the data module
switched to ``device_augment`` and ``view_keys`` (the cache is keyed by the views those draw). The teacher runs in eval
mode, in float32 (TF32 off), on every view of every training image in key order: ``num_views`` consecutive rows per
image, ``image_batch = max(1, batch_size // num_views)`` images per forward. Rows go straight into a memory-mapped
``.npy`` file; the JSON sidecar records the metadata and, every few seconds and at the end, how many images are done.
An interrupted build (Ctrl-C, a lost machine) resumes from the last recorded image when the same command runs again.

Disk: ``num_images * num_views * num_classes * 4`` bytes (CIFAR-100: 50,000 x 162 x 100 x 4 = 3.24 GB), checked
before anything is written. Memory: the teacher's activations for one forward of ``batch_size`` images plus the
training images as uint8 (150 MB for CIFAR-100); the file's pages are written back by the operating system.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_kd.data.device_augment import augment_uint8_batch, crop_flip_params_of_views
from lightning_kd.teacher_cache import CACHE_FORMAT, differing_fields, metadata_path

__all__ = ["build_teacher_cache", "main"]

#: seconds between two progress records in the sidecar (each one flushes the written rows first)
PROGRESS_EVERY_S = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-kd cache-teacher",
        description="Compute the teacher's logits for every (training image, augmented view) of a preset's data once, "
        "into a memory-mapped file; fits given --model.init_args.teacher_cache FILE then read them instead of running "
        "the teacher. Running the same command again resumes an interrupted build.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", "-c", action="append", required=True, help="the preset (repeat for overlays)")
    parser.add_argument("--output", "-o", help="the cache file (default: teacher_cache/<data>_<teacher>_<hash>.npy)")
    parser.add_argument("--batch-size", type=int, default=1024, help="teacher forwards per batch (default 1024)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightning-kd cache-teacher``; returns the exit code."""
    args, overrides = _parser().parse_known_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    module, datamodule = _from_preset(args.config, overrides)
    device = _device(args.device)
    output = Path(args.output) if args.output else None
    path = build_teacher_cache(
        module, datamodule, output, batch_size=args.batch_size, device=device, progress=not args.no_progress
    )
    print(f"teacher cache complete: {path} (metadata {metadata_path(path)})", flush=True)
    print(
        f"use it with: lightning-kd fit --config PRESET --config configs/cifar100/cached.yaml "
        f"--model.init_args.teacher_cache {path}",
        flush=True,
    )
    return 0


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu.")
    return device


def _from_preset(configs: Sequence[str], overrides: Sequence[str]) -> tuple[Any, Any]:
    """The preset's module (teacher with its weights) and data module, as ``fit`` would build them."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from lightning_kd.apps.cli_app import KDLightningCLI
    from lightning_kd.apps.cli_parser import KDArgumentParser

    args = [arg for config in configs for arg in ("--config", config)]
    args += [*overrides, "--data.init_args.device_augment", "true", "--data.init_args.view_keys", "true"]
    args += ["--data.init_args.num_workers", "0"]
    with warnings.catch_warnings():
        # the preset is parsed from `args` while sys.argv holds this tool's own command line, on purpose
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = KDLightningCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=KDArgumentParser,
            save_config_callback=None,
            run=False,
            args=args,
        )
    return cli.model, cli.datamodule


def build_teacher_cache(
    module: Any,
    datamodule: Any,
    output: Path | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Write (or finish) the teacher cache of ``module``'s teacher on ``datamodule``'s training views.

    Args:
        module: a :class:`~lightning_kd.DistillationModule` with the teacher's trained weights.
        datamodule: a data module with ``device_augment`` and ``view_keys`` (set up here for ``fit``).
        output: the cache file; ``None`` names it ``teacher_cache/<data>_<teacher>_<hash>.npy``.
        batch_size: teacher forwards per batch (rounded down to whole images' views).
        device: where the teacher runs.
        progress: show a progress bar.
        on_progress: called with the number of images done after each progress record (tests interrupt here).

    Returns:
        The cache file's path.

    Raises:
        ValueError: data without view keys, a teacher without weights, an existing file made for another teacher or
            data, or too little disk space.
    """
    if not module.teacher_available:
        raise ValueError("the teacher has no trained weights (teacher_weights missing): there is nothing to cache.")
    datamodule.setup("fit")
    space = datamodule.view_space() if getattr(datamodule, "view_keys", False) else None
    if space is None:
        raise ValueError(
            f"{type(datamodule).__name__} does not key its training views: the cache needs device_augment=True and "
            "view_keys=True (the views are drawn by the batch augmentation on the device)."
        )
    expected = module.teacher_cache_metadata(space)
    if output is None:
        name = str(expected["teacher"]["architecture"]).replace("/", "_")
        output = (
            Path("teacher_cache")
            / f"{type(datamodule).__name__}_{name}_{expected['teacher']['weights_sha256'][:12]}.npy"
        )
    output = Path(output)
    rows, classes = expected["shape"]
    array, done = _open_for_writing(output, expected, rows, classes)

    teacher = module.teacher.float().eval().to(device)
    images, views = datamodule.train_set.images, space.num_views
    mean = torch.tensor(space.mean, dtype=torch.float32, device=device)
    std = torch.tensor(space.std, dtype=torch.float32, device=device)
    per_batch = max(1, batch_size // views)
    view_offsets, view_flips = crop_flip_params_of_views(torch.arange(views, device=device), space.padding)
    bar = _progress_bar(progress, space.num_images * views, done * views)
    last_record = time.monotonic()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # float32 as recorded
    try:
        with torch.no_grad():
            for start in range(done, space.num_images, per_batch):
                stop = min(start + per_batch, space.num_images)
                chunk = images[start:stop].to(device).repeat_interleave(views, dim=0)
                n = stop - start
                inputs = augment_uint8_batch(
                    chunk, view_offsets.repeat(n, 1), view_flips.repeat(n), mean, std, padding=space.padding
                )
                array[start * views : stop * views] = teacher(inputs).float().cpu().numpy()
                bar.update(n * views)
                if time.monotonic() - last_record >= PROGRESS_EVERY_S or stop == space.num_images:
                    _record_progress(array, output, expected, stop, complete=stop == space.num_images)
                    last_record = time.monotonic()
                    if on_progress is not None:
                        on_progress(stop)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        bar.close()
    if done == space.num_images:  # already complete: nothing ran
        _record_progress(array, output, expected, done, complete=True)
    return output


def _open_for_writing(output: Path, expected: dict[str, Any], rows: int, classes: int) -> tuple[np.memmap, int]:
    """The file's memory map and how many images are already done (0 for a new file)."""
    sidecar = metadata_path(output)
    if output.exists() and sidecar.exists():
        found = json.loads(sidecar.read_text())
        differ = differing_fields(found, expected) if found.get("format") == CACHE_FORMAT else ["format"]
        if differ:
            raise ValueError(
                f"{output} holds a teacher cache made for another run ({'; '.join(differ)}): it is left as it is. "
                "Choose another --output, or delete both files to rebuild this one."
            )
        return np.load(output, mmap_mode="r+"), int(found.get("progress", {}).get("images_done", 0))
    if output.exists():
        raise ValueError(
            f"{output} exists but has no {sidecar.name}: it is not a cache this tool started; choose another --output."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    needed = rows * classes * 4
    free = shutil.disk_usage(output.parent).free
    if needed > free:
        raise ValueError(
            f"the cache needs {needed / 1e9:.2f} GB and {output.parent} has {free / 1e9:.2f} GB free: choose an "
            "--output on a larger disk."
        )
    array = np.lib.format.open_memmap(output, mode="w+", dtype=np.float32, shape=(rows, classes))
    _record_progress(array, output, expected, 0, complete=False)
    return array, 0


def _record_progress(array: np.memmap, output: Path, expected: dict[str, Any], done: int, *, complete: bool) -> None:
    """Flush the written rows, then record how many images are done (atomically: a reader never sees half a file)."""
    array.flush()
    metadata = {**expected, "progress": {"images_done": done, "complete": complete}}
    sidecar = metadata_path(output)
    tmp = sidecar.with_suffix(sidecar.suffix + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(tmp, sidecar)


def _progress_bar(enabled: bool, total: int, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="view", unit_scale=True, disable=not enabled, desc="teacher cache")
