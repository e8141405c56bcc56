"""The end-to-end demo behind ``make demo``: a teacher, a student baseline, KD and KD + LS on the digits.

Each run goes through the real command line (``python -m lightning_kd fit --config configs/demo/<run>.yaml``)
on the CPU. Nothing is deleted: every run writes a new run folder ``runs/demo/<run>/version_N/`` and points
``runs/demo/<run>/latest`` at it, so the students distil from the teacher just trained
(``runs/demo/teacher/latest/checkpoints/best.ckpt``) and the table is read from the new runs' logged metrics
(``runs/demo/<run>/latest/metrics.csv``). Earlier demo runs stay beside them (``make clean-runs`` removes all).

Usage::

    python -m lightning_kd.demo [--root .] [--runs teacher student kd kd_ls]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

from lightning_kd.run_folders import latest_run

RUNS = ("teacher", "student", "kd", "kd_ls")
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


def run_demo(root: Path, runs: tuple[str, ...] = RUNS) -> dict[str, tuple[float, float]]:
    """Run the demo configs in order through the CLI and return each run's ``(best, last)`` top-1.

    Raises:
        RuntimeError: if a run did not make a new run folder (the ``latest`` link did not move).
    """
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
        results[run] = read_accuracies(folder / "metrics.csv")
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the demo, print the Markdown table, and fail if a run is below the expected quality."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root holding configs/demo")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS, help="runs to do, in order")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run_demo(args.root, tuple(args.runs))
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
