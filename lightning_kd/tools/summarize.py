"""Multi-seed summary: mean ± std of the best and last top-1 of N runs per preset, beside the paper's number.

A run is a folder written by the CLI's CSV logger, ``runs/<group>/<name>/version_N/`` (or any folder name), that
holds ``metrics.csv`` (``val/acc1`` per validation epoch, a fraction) and ``config.yaml``. Runs are grouped by the
folder above their version folder (one folder per preset by the run-folder convention); the config tells the
preset (dataset, loss and whether it standardizes, teacher and student), which selects the paper's number in
:mod:`lightning_kd.tools.paper_results`, and the seed. Without a ``config.yaml`` the preset is read from the folder
names instead (``.../<method>/<teacher>_<student>/<version>`` or ``.../imagenet/<pair>/<method>/<version>``).

The reported statistic follows the paper: "best" is the best-epoch top-1 of each run (the paper reports the mean of
4 runs' best epochs), "last" the final epoch's. The std is the sample standard deviation (n - 1).

Examples::

    python -m lightning_kd.tools.summarize runs/cifar100/kd_ls runs/cifar100/kd
    python -m lightning_kd.tools.summarize "runs/cifar100/*/resnet32x4_resnet8x4" --output summary.md
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_kd.tools.paper_results import PAPER_TOP1, PaperResult

__all__ = ["PresetSummary", "RunResult", "SummaryError", "format_markdown", "main", "read_run", "summarize"]

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
# How presets are named by dataset: the layout of configs/ (and of runs/ under the run-folder convention).
_LAYOUTS = {"cifar100": "cifar100/{method}/{pair}", "imagenet": "imagenet/{pair}/{method}"}
_DATASETS = {"CIFAR100DataModule": "cifar100", "ImageNetDataModule": "imagenet"}
# Short names of the ImageNet networks in the preset folders (configs/imagenet/r34_r18, r50_mv1).
_SHORT_NAMES = {
    "torchvision/resnet18": "r18",
    "torchvision/resnet34": "r34",
    "torchvision/resnet50": "r50",
    "MobileNetV1": "mv1",
}


class SummaryError(ValueError):
    """Bad input to the summary: nothing to summarize, a missing path, or a metrics file that cannot be used."""


@dataclass(frozen=True)
class RunResult:
    """The top-1 record of one run.

    Attributes:
        folder: The run folder (the one holding ``metrics.csv``).
        preset: The preset id (``cifar100/kd_ls/resnet32x4_resnet8x4``).
        seed: ``seed_everything`` of the run, ``None`` when unknown.
        best: Best top-1 over the logged epochs, in percent.
        last: Top-1 of the last logged epoch, in percent.
        epochs: Number of logged validation epochs.
        max_epochs: Epochs the run was configured for, ``None`` when unknown.
    """

    folder: Path
    preset: str
    seed: int | None
    best: float
    last: float
    epochs: int
    max_epochs: int | None

    @property
    def finished(self) -> bool:
        """Whether every configured epoch was logged (unknown ``max_epochs`` counts as finished)."""
        return self.max_epochs is None or self.epochs >= self.max_epochs


@dataclass(frozen=True)
class PresetSummary:
    """The runs of one preset and their statistics (percent)."""

    preset: str
    group: Path
    runs: tuple[RunResult, ...]
    paper: PaperResult | None

    @property
    def n(self) -> int:
        return len(self.runs)

    def mean_std(self, field: str) -> tuple[float, float]:
        """Mean and sample std (n - 1; NaN for a single run) of ``best`` or ``last``."""
        values = [getattr(run, field) for run in self.runs]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std


def _expand(patterns: Iterable[str]) -> list[Path]:
    """Every ``metrics.csv`` named by the patterns (files, run folders, parent folders, globs)."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise SummaryError(f"No file or folder matches {pattern!r}: pass run folders, their parents, or globs.")
        for match in map(Path, matches):
            if match.is_file():
                if match.name != METRICS_FILE:
                    raise SummaryError(f"{match} is not a {METRICS_FILE} file nor a run folder.")
                found.append(match)
            else:
                found.extend(sorted(match.rglob(METRICS_FILE)))
    unique = list(dict.fromkeys(path.resolve() for path in found))
    if not unique:
        raise SummaryError(
            f"No {METRICS_FILE} found under {', '.join(patterns)}: runs log it in runs/<group>/<name>/version_N/ "
            "(CSVLogger). Point this command at those folders, their parents, or a glob."
        )
    return unique


def _read_top1(path: Path, metric: str) -> list[float]:
    """The ``metric`` values of a metrics.csv in epoch order, in percent."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or metric not in rows[0]:
        raise SummaryError(f"{path} has no {metric!r} column: the run has not finished a validation epoch yet.")
    logged = [row for row in rows if row.get(metric) not in (None, "")]
    if "epoch" in rows[0]:  # the CSV logger writes rows in step order; epoch order is the same, made explicit
        logged.sort(key=lambda row: float(row["epoch"] or 0))
    values = [float(row[metric]) for row in logged]
    if not values:
        raise SummaryError(f"{path} has no {metric!r} value: the run has not finished a validation epoch yet.")
    if any(not 0.0 <= value <= 1.0 for value in values):
        raise SummaryError(f"{path}: {metric!r} values outside [0, 1]; this project logs accuracies as fractions.")
    return [100.0 * value for value in values]


def _name(spec: Any) -> str:
    """A network given by name, or as a ``class_path`` dict (its class name)."""
    if isinstance(spec, dict):
        return str(spec.get("class_path", "?")).rsplit(".", 1)[-1]
    return str(spec)


def _preset_from_config(config: dict[str, Any]) -> str:
    dataset_class = str(config.get("data", {}).get("class_path", "")).rsplit(".", 1)[-1]
    dataset = _DATASETS.get(dataset_class, dataset_class.removesuffix("DataModule").lower() or "unknown")
    model = config.get("model", {})
    init = model.get("init_args", {})
    if "loss" not in init:  # a network trained alone (ClassificationModule)
        return f"{dataset}/vanilla/{_name(init.get('model'))}"
    loss = init["loss"]
    method = str(loss.get("class_path", "?")).rsplit(".", 1)[-1].lower()
    if loss.get("init_args", {}).get("standardize"):
        method += "_ls"
    teacher, student = (_SHORT_NAMES.get(_name(init.get(k)), _name(init.get(k))) for k in ("teacher", "student"))
    pair = f"{teacher}_{student}".replace("/", "-")
    return _LAYOUTS.get(dataset, "{dataset}/{method}/{pair}").format(dataset=dataset, method=method, pair=pair)


def _preset_from_folders(folder: Path) -> str:
    """The paper's preset whose id ends the path above the version folder, else that path itself."""
    group = folder.parent.as_posix()
    matches = [key for key in PAPER_TOP1 if group == key or group.endswith("/" + key)]
    return matches[0] if matches else "/".join(folder.parent.parts[-3:])


def read_run(metrics_csv: Path, metric: str = "val/acc1") -> RunResult:
    """Read one run: its top-1 curve from ``metrics.csv`` and its preset and seed from ``config.yaml`` beside it.

    Raises:
        SummaryError: When the file has no ``metric`` values, or values outside [0, 1].
    """
    folder = metrics_csv.parent
    top1 = _read_top1(metrics_csv, metric)
    config_path = folder / CONFIG_FILE
    config: dict[str, Any] = {}
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
    preset = _preset_from_config(config) if config else _preset_from_folders(folder)
    seed = config.get("seed_everything")
    max_epochs = config.get("trainer", {}).get("max_epochs")
    return RunResult(
        folder=folder,
        preset=preset,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        best=max(top1),
        last=top1[-1],
        epochs=len(top1),
        max_epochs=max_epochs if isinstance(max_epochs, int) else None,
    )


def summarize(paths: Sequence[str], metric: str = "val/acc1") -> tuple[list[PresetSummary], list[str]]:
    """Group the runs under ``paths`` by preset and compute their statistics.

    Args:
        paths: Run folders, folders above them, ``metrics.csv`` files, or glob patterns.
        metric: The logged accuracy to summarize.

    Returns:
        The summaries (paper-table order first, then by name), and one line per run that could not be read.

    Raises:
        SummaryError: When nothing matches, no ``metrics.csv`` exists, or none of them holds ``metric``.
    """
    runs: list[RunResult] = []
    problems: list[str] = []
    for path in _expand(paths):
        try:
            runs.append(read_run(path, metric))
        except SummaryError as error:
            problems.append(str(error))
    if not runs:
        raise SummaryError("No run with a logged top-1 was found:\n  " + "\n  ".join(problems))
    groups: dict[tuple[str, Path], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.preset, run.folder.parent), []).append(run)
    order = {key: index for index, key in enumerate(PAPER_TOP1)}
    summaries = [
        PresetSummary(
            preset,
            group,
            tuple(sorted(members, key=lambda r: (r.seed is None, r.seed, str(r.folder)))),
            PAPER_TOP1.get(preset),
        )
        for (preset, group), members in groups.items()
    ]
    summaries.sort(key=lambda s: (order.get(s.preset, len(order)), s.preset, str(s.group)))
    return summaries, problems


def _stat(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _epochs(runs: Sequence[RunResult]) -> str:
    counts = sorted({run.epochs for run in runs})
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    unfinished = sum(not run.finished for run in runs)
    return f"{text} ({unfinished} unfinished)" if unfinished else text


def format_markdown(summaries: Sequence[PresetSummary], problems: Sequence[str] = ()) -> str:
    """A Markdown table: one row per preset, mean ± std (n - 1) in percent, the paper's number and the gap."""
    repeated = {s.preset for s in summaries if sum(t.preset == s.preset for t in summaries) > 1}
    lines = [
        "| preset | n | seeds | epochs | best top-1 (%) | last top-1 (%) | paper (%) | best − paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    unverified = False
    for summary in summaries:
        best, best_std = summary.mean_std("best")
        last, last_std = summary.mean_std("last")
        label = f"{summary.preset} ({summary.group})" if summary.preset in repeated else summary.preset
        seeds = ", ".join("?" if run.seed is None else str(run.seed) for run in summary.runs)
        paper, gap = "—", "—"
        if summary.paper is not None:
            paper = f"{summary.paper.top1:.2f}" + ("" if summary.paper.verified else "*")
            gap = f"{best - summary.paper.top1:+.2f}"
            unverified |= not summary.paper.verified
        lines.append(
            f"| {label} | {summary.n} | {seeds} | {_epochs(summary.runs)} | {_stat(best, best_std)} | "
            f"{_stat(last, last_std)} | {paper} | {gap} |"
        )
    notes = [
        "",
        "Mean ± sample std (n − 1) over runs of the best-epoch and last-epoch top-1; the paper reports the mean of the "
        "best epochs of 4 runs.",
    ]
    if unverified:
        notes.append("\\* not checked against the paper's PDF (lightning_kd/tools/paper_results.py).")
    if any(not run.finished for summary in summaries for run in summary.runs):
        notes.append("Unfinished runs (fewer logged epochs than max_epochs) are included as they stand.")
    if problems:
        notes += ["", "Runs left out:", *(f"- {problem}" for problem in problems)]
    return "\n".join(lines + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m lightning_kd.tools.summarize PATH... [--output FILE]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="lightning-kd summarize",
        description="Mean ± std of the best and last top-1 of N runs per preset, beside the paper's number.",
    )
    parser.add_argument("paths", nargs="+", help="run folders (runs/<group>/<name>/version_N), their parents, globs")
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--metric", default="val/acc1", help="the logged accuracy (default: val/acc1)")
    args = parser.parse_args(argv)
    try:
        summaries, problems = summarize(args.paths, args.metric)
    except SummaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = format_markdown(summaries, problems)
    print(table, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
