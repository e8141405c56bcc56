"""The end-to-end demo behind ``make demo``: a teacher, a student baseline, KD and KD + LS on the digits.

Each run goes through the real command line (``python -m lightning_kd fit --config configs/demo/<run>.yaml``)
on the CPU, printing one line per epoch (:class:`~lightning_kd.callbacks.EpochLine`). Nothing is deleted: every run
writes a new run folder ``runs/demo/<run>/version_N/`` and points ``runs/demo/<run>/latest`` at it, and the table is
read from the new runs' logged metrics (``<run folder>/metrics.csv``). Earlier demo runs stay beside them
(``make clean-runs`` removes all).

How the students get their teacher: after the teacher run, the demo points ``runs/demo/teacher.ckpt`` (a relative
link, or a copy where links are not allowed) at that run's ``checkpoints/best.ckpt``, and
``configs/demo/kd.yaml`` / ``kd_ls.yaml`` read ``runs/demo/teacher.ckpt``. Only this demo writes that file, so a
later ``lightning-kd fit --config configs/demo/teacher.yaml`` (a 1-epoch test, say) cannot change which teacher
the students distil from. ``--runs kd kd_ls`` alone reuses the teacher of the last demo.

Usage::

    python -m lightning_kd.apps.demo [--root .] [--runs teacher student kd kd_ls]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lightning_kd.apps.run_folders import latest_run
from lightning_kd.callbacks.epoch_line import EpochLine, epoch_line  # noqa: F401 (lightning_kd.demo.EpochLine)

RUNS = ("teacher", "student", "kd", "kd_ls")
#: runs that distil from the demo teacher
STUDENTS_OF_TEACHER = ("kd", "kd_ls")
#: the demo teacher's checkpoint (relative to the root): a link to the best checkpoint of the demo's teacher run
TEACHER_CHECKPOINT = Path("runs/demo/teacher.ckpt")
#: quality the demo must reach (best validation top-1, fractions)
MIN_TEACHER_ACC = 0.95
MIN_RUN_ACC = 0.80


def read_accuracies(metrics_csv: Path) -> tuple[float, float]:
    """Return ``(best, last)`` validation top-1 logged in a CSVLogger ``metrics.csv``.

    Raises:
        ValueError: if the file holds no ``val/acc1`` / ``val/acc1_best`` values.
    """
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    acc = [float(r["val/acc1"]) for r in rows if r.get("val/acc1")]
    best = [float(r["val/acc1_best"]) for r in rows if r.get("val/acc1_best")]
    if not acc or not best:
        raise ValueError(f"{metrics_csv} holds no val/acc1 or val/acc1_best values: did the run validate?")
    return best[-1], acc[-1]


def markdown_table(results: dict[str, tuple[float, float]]) -> str:
    """The demo's table, accuracies in percent."""
    lines = ["| run | val top-1 best (%) | val top-1 last (%) |", "|---|---|---|"]
    lines += [f"| {run} | {100 * best:.2f} | {100 * last:.2f} |" for run, (best, last) in results.items()]
    return "\n".join(lines)


def publish_teacher(root: Path, teacher_run: Path) -> Path:
    """Point ``<root>/runs/demo/teacher.ckpt`` at ``teacher_run``'s ``checkpoints/best.ckpt``, atomically.

    A relative link; where the file system refuses links, a copy of the checkpoint.

    Returns:
        The ``teacher.ckpt`` path.

    Raises:
        FileNotFoundError: if the teacher run has no ``checkpoints/best.ckpt``.
    """
    best = teacher_run / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise FileNotFoundError(f"{best} does not exist: the teacher run saved no best checkpoint.")
    link = root / TEACHER_CHECKPOINT
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    try:
        temporary.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    except OSError:
        shutil.copyfile(best, temporary)
    os.replace(temporary, link)
    return link


def run_demo(root: Path, runs: tuple[str, ...] = RUNS) -> dict[str, tuple[float, float]]:
    """Run the demo configs in order through the CLI and return each run's ``(best, last)`` top-1.

    Raises:
        FileNotFoundError: if a distillation run is asked for and no demo teacher was trained yet.
        RuntimeError: if a run did not make a new run folder (the ``latest`` link did not move).
    """
    teacher = root / TEACHER_CHECKPOINT
    if "teacher" not in runs and any(run in STUDENTS_OF_TEACHER for run in runs) and not teacher.exists():
        raise FileNotFoundError(
            f"{teacher} does not exist: add 'teacher' to --runs (the demo trains the teacher and links it there)."
        )
    results = {}
    for run in runs:
        out_dir = root / "runs" / "demo" / run
        previous = latest_run(out_dir) if (out_dir / "latest").exists() else None
        command = [sys.executable, "-m", "lightning_kd", "fit", "--config", f"configs/demo/{run}.yaml"]
        print(f"==> {' '.join(command[2:])}", flush=True)
        start = time.perf_counter()
        subprocess.run(command, cwd=root, check=True)
        print(f"==> {run} finished in {time.perf_counter() - start:.0f} s", flush=True)
        folder = latest_run(out_dir)
        if folder == previous:
            raise RuntimeError(f"{run}: the fit finished but {out_dir / 'latest'} still points at {previous}.")
        if run == "teacher":
            link = publish_teacher(root, folder)
            print(f"==> the students distil from {link.relative_to(root)} -> {folder / 'checkpoints/best.ckpt'}")
        results[run] = read_accuracies(folder / "metrics.csv")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the demo, print the Markdown table, and fail if a run is below the expected quality."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root holding configs/demo")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS, help="runs to do, in order")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        results = run_demo(args.root, tuple(args.runs))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s (handwritten digits, CPU).\n")
    print(markdown_table(results))
    failures = [
        f"{run}: best {100 * best:.2f}% < {100 * floor:.0f}%"
        for run, (best, _) in results.items()
        for floor in [MIN_TEACHER_ACC if run == "teacher" else MIN_RUN_ACC]
        if best < floor
    ]
    if failures:
        print("\nBelow the expected quality: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
