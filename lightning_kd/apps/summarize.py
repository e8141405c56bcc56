"""Multi-seed summary: mean ± std of the best and last top-1 of N runs per preset, beside the paper's number.

A run is a folder written by the CLI's CSV logger, ``runs/<group>/<name>/version_N/`` (or any folder name), that
holds ``metrics.csv`` (``val/acc1`` per validation epoch, a fraction) and ``config.yaml``. Runs are grouped by the
folder above their version folder (one folder per preset by the run-folder convention); the config tells the
preset (dataset, loss and whether it standardizes, teacher and student), which selects the paper's number in
:mod:`lightning_kd.apps.paper_results`, and the seed. Without a ``config.yaml`` the preset is read from the folder
names instead (``.../<method>/<teacher>_<student>/<version>`` or ``.../imagenet/<pair>/<method>/<version>``). Runs of
the ViT table's networks are named by their presets, ``cifar100/vit/<student>_<base|lg|kd_ls>``.

The records of ``benchmarks/fidelity.py`` (``<preset>__seed<N>.json``: the top-1 curve, preset file, seed and extra
arguments of one finished run) are read too (:func:`read_record`), named by their preset file
(``cifar100/cpu_scale/kd_ls``): they are committed, while run folders stay on the machine that ran them.

What is never pooled:

* sub-runs: ``validate_K``, ``test_K`` and ``predict_K`` folders inside a run folder (an evaluation of that run's
  checkpoint, logged beside it) are neither runs nor presets, and are skipped;
* runs of one preset with different recipes: runs are pooled only when their ``config.yaml`` settings are equal
  except ``seed_everything`` and the per-run paths (the logger's ``version``, the ``ckpt_path`` a run resumed
  from). Each recipe is its own row, labelled with the settings that tell the rows apart
  (``digits/kd_ls/resnet20_resnet8 (max_epochs=2)``). An argument a run's ``config.yaml`` does not list (the run
  predates it) counts as its default (:func:`with_defaults`);
* finished and unfinished runs: a run with fewer logged epochs than its ``max_epochs`` (in progress, or stopped
  early) is in a row of its own, labelled ``(unfinished)``, and out of the verdicts;
* failed runs: a run folder whose ``status.json`` (written by the CLI) says ``"status": "failed"`` is listed as
  failed, with its error, under "Runs left out". Runs without ``status.json`` are read as they stand.

The reported statistic follows the paper: "best" is the best-epoch top-1 of each run (the paper reports the mean of
4 runs' best epochs), "last" the final epoch's. The std is the sample standard deviation (n - 1).

Examples::

    python -m lightning_kd.apps.summarize runs/cifar100/kd_ls runs/cifar100/kd
    python -m lightning_kd.apps.summarize "runs/cifar100/*/resnet32x4_resnet8x4" --output summary.md
    python -m lightning_kd.apps.summarize benchmarks/fidelity_results  # the committed fidelity records
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib
import inspect
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from lightning_kd.apps.paper_results import PAPER_TOP1, PaperResult
from lightning_kd.apps.verdict import SE_THRESHOLD, verdict

__all__ = [
    "PresetSummary",
    "RunResult",
    "SummaryError",
    "format_markdown",
    "ls_verdicts",
    "main",
    "read_record",
    "read_run",
    "summarize",
    "with_defaults",
]

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
# the records of benchmarks/fidelity.py: <preset>__seed<N>.json, one per finished (preset, seed) run
RECORD_GLOB = "*__seed*.json"
RECORD_VERSIONS = (1,)
# evaluations of a run's checkpoint, logged inside the run folder (lightning_kd.apps.run_folders.next_stage_folder)
_SUB_RUN = re.compile(r"(validate|test|predict)_\d+")
# files or folders that only a run folder holds
_RUN_MARKERS = (METRICS_FILE, CONFIG_FILE, "hparams.yaml", "checkpoints")
# config.yaml settings that differ from run to run of one recipe: the seed and per-run paths
_PER_RUN_SETTINGS = (
    re.compile(r"seed_everything"),
    re.compile(r"ckpt_path"),
    re.compile(r"trainer\.logger(\.\d+)?\.init_args\.version"),
)
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
# The ViT table's networks (configs/cifar100/vit/): its students and their guidance teacher.
_VIT_MODELS = frozenset({"deit_tiny", "deit_tiny_distilled", "t2t_vit_7", "pit_tiny", "pit_tiny_distilled", "pvt_tiny"})
_VIT_TEACHER = "resnet56_pycls"


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
        recipe: The run's ``config.yaml`` settings as sorted ``(dotted key, value)`` pairs, without the seed and
            the per-run paths; ``None`` without a config. Runs are pooled only when their recipes are equal.
    """

    folder: Path
    preset: str
    seed: int | None
    best: float
    last: float
    epochs: int
    max_epochs: int | None
    recipe: tuple[tuple[str, str], ...] | None = None

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
    #: the recipe settings that tell this row from other rows of the same preset (empty when it is the only one)
    distinct: tuple[tuple[str, str], ...] = ()

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def finished(self) -> bool:
        """Whether this row holds finished runs (a row holds finished or unfinished runs, never both)."""
        return all(run.finished for run in self.runs)

    def mean_std(self, field: str) -> tuple[float, float]:
        """Mean and sample std (n - 1; NaN for a single run) of ``best`` or ``last``."""
        values = [getattr(run, field) for run in self.runs]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std


def is_sub_run(folder: Path) -> bool:
    """Whether ``folder`` is a ``validate_K`` / ``test_K`` / ``predict_K`` evaluation inside a run folder."""
    return bool(_SUB_RUN.fullmatch(folder.name)) and any((folder.parent / m).exists() for m in _RUN_MARKERS)


def _expand(patterns: Iterable[str]) -> list[Path]:
    """Every ``metrics.csv`` and fidelity record named by the patterns (files, run folders, parent folders, globs),
    sub-runs left out."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise SummaryError(f"No file or folder matches {pattern!r}: pass run folders, their parents, or globs.")
        for match in map(Path, matches):
            if match.is_file():
                if match.name != METRICS_FILE and match.suffix != ".json":
                    raise SummaryError(
                        f"{match} is not a {METRICS_FILE} file, a fidelity record ({RECORD_GLOB}) nor a run folder."
                    )
                found.append(match)
            else:
                found.extend(sorted(match.rglob(METRICS_FILE)))
                found.extend(sorted(match.rglob(RECORD_GLOB)))
    unique = [path for path in dict.fromkeys(path.resolve() for path in found) if not is_sub_run(path.parent)]
    if not unique:
        raise SummaryError(
            f"No {METRICS_FILE} nor fidelity record ({RECORD_GLOB}) found under {', '.join(patterns)}: runs log "
            "metrics.csv in runs/<group>/<name>/version_N/ (CSVLogger), benchmarks/fidelity.py writes its records "
            "in benchmarks/fidelity_results/. Point this command at those folders, their parents, or a glob."
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


def _vit_preset(init: dict[str, Any]) -> str | None:
    """The ViT table's preset id (``cifar100/vit/<student>_<method>``) of a CIFAR-100 run, ``None`` for other runs.

    ``base``: a ViT student trained alone; ``lg``: distilled with a feature loss and no KD term (``kd_weight`` 0);
    ``kd_ls`` / ``kd``: KD or TokenKD with / without the z-score, ``_lg`` appended when a feature loss is added too.
    The guidance teacher trained alone is ``cifar100/vit/resnet56_pycls``.
    """
    if "loss" not in init:
        model = _name(init.get("model"))
        if model == _VIT_TEACHER:
            return f"cifar100/vit/{model}"
        return f"cifar100/vit/{model.removesuffix('_distilled')}_base" if model in _VIT_MODELS else None
    student = _name(init.get("student"))
    if student not in _VIT_MODELS:
        return None
    student = student.removesuffix("_distilled")
    loss = init["loss"].get("init_args", {}) if isinstance(init["loss"], dict) else {}
    if init.get("feature_loss") and loss.get("kd_weight", 1.0) == 0:
        return f"cifar100/vit/{student}_lg"
    method = "kd_ls" if loss.get("standardize") else "kd"
    return f"cifar100/vit/{student}_{method}{'_lg' if init.get('feature_loss') else ''}"


def _preset_from_config(config: dict[str, Any]) -> str:
    dataset_class = str(config.get("data", {}).get("class_path", "")).rsplit(".", 1)[-1]
    dataset = _DATASETS.get(dataset_class, dataset_class.removesuffix("DataModule").lower() or "unknown")
    model = config.get("model", {})
    init = model.get("init_args", {})
    vit = _vit_preset(init) if dataset == "cifar100" else None
    if vit is not None:
        return vit
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


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` pairs of a nested config; list items are numbered (``callbacks.0.class_path``)."""
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in _flatten(item, f"{prefix}{key}.")]
    if isinstance(value, list) and value:
        return [pair for index, item in enumerate(value) for pair in _flatten(item, f"{prefix}{index}.")]
    return [(prefix.removesuffix("."), json.dumps(value, sort_keys=True, default=str))]


def _signature_defaults(class_path: str) -> dict[str, Any]:
    """The plain defaulted ``__init__`` arguments of the class a config names; empty when it cannot be imported."""
    module_name, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
        parameters = inspect.signature(target).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    return {
        p.name: p.default for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and _plain(p.default)
    }


def _plain(value: Any) -> bool:
    """Whether a default is written in a config.yaml as itself (a scalar or a list of scalars); a callable or an
    object default (``optimizer=cifar_sgd``) is written in another form, so it is not filled in."""
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def with_defaults(config: Any) -> Any:
    """``config`` with every ``class_path``'s missing ``init_args`` filled in from the class's signature defaults.

    A run folder's ``config.yaml`` lists the arguments the classes had when it ran; a run of the same recipe made
    after an argument was added (with a default that keeps the old behaviour) lists one more. Filling the defaults
    in makes both the same recipe, while an argument set to a non-default value still tells them apart.
    """
    if isinstance(config, list):
        return [with_defaults(item) for item in config]
    if not isinstance(config, dict):
        return config
    filled = {key: with_defaults(value) for key, value in config.items()}
    class_path = filled.get("class_path")
    init_args = filled.get("init_args", {})
    if isinstance(class_path, str) and isinstance(init_args, dict):
        defaults = _signature_defaults(class_path)
        if defaults:
            filled["init_args"] = {**{k: with_defaults(v) for k, v in defaults.items()}, **init_args}
    return filled


def recipe_of(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The settings that make a run's recipe: every ``config.yaml`` setting but the seed and the per-run paths,
    arguments a class defaults included (:func:`with_defaults`)."""
    pairs = _flatten(with_defaults(config))
    return tuple(sorted((k, v) for k, v in pairs if not any(p.fullmatch(k) for p in _PER_RUN_SETTINGS)))


class RunFailed(SummaryError):
    """A run whose ``status.json`` says it failed."""


def read_status(folder: Path) -> dict[str, Any] | None:
    """The run folder's ``status.json`` (written by the CLI), or ``None`` when it has none or it is unreadable."""
    try:
        status = json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def read_run(metrics_csv: Path, metric: str = "val/acc1") -> RunResult:
    """Read one run: its top-1 curve from ``metrics.csv`` and its preset and seed from ``config.yaml`` beside it.

    Raises:
        RunFailed: When the run's ``status.json`` says ``"status": "failed"``.
        SummaryError: When the file has no ``metric`` values, or values outside [0, 1].
    """
    folder = metrics_csv.parent
    status = read_status(folder)
    if status is not None and status.get("status") == "failed":
        error = str(status.get("error") or "no error recorded").strip().splitlines()
        raise RunFailed(f"{folder}: failed during training ({STATUS_FILE}): {error[0] if error else '?'}")
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
        recipe=recipe_of(config) if config else None,
    )


def _record_preset(preset_path: str) -> str:
    """The preset id of a record: its preset file's path under ``configs/``, without ``.yaml``
    (``configs/cifar100/cpu_scale/kd_ls.yaml`` -> ``cifar100/cpu_scale/kd_ls``)."""
    parts = PurePosixPath(preset_path).with_suffix("").parts
    return "/".join(parts[1:] if parts[:1] == ("configs",) else parts)


def read_record(path: Path, metric: str = "val/acc1") -> RunResult:
    """Read one record of ``benchmarks/fidelity.py`` (``<preset>__seed<N>.json``): the digest of one finished run.

    A record holds the run's ``val/acc1`` curve (percent), its preset file, seed and extra CLI arguments; it is
    written only when the run's ``fit`` exited cleanly, so its run is finished. Its preset id is the preset file's
    path under ``configs/`` (:func:`_record_preset`), and runs with the same extra arguments pool. Records outlive
    the run folders they digest (those stay on the machine that ran them), so a clean clone can print the table.

    Raises:
        SummaryError: When the file is not a complete record of a known version, or ``metric`` is not ``val/acc1``.
    """
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SummaryError(f"{path}: not a readable fidelity record ({error}).") from error
    if not isinstance(record, dict) or "record_version" not in record:
        raise SummaryError(f"{path}: not a fidelity record (no 'record_version'); records are {RECORD_GLOB} files.")
    if record["record_version"] not in RECORD_VERSIONS:
        raise SummaryError(
            f"{path}: record_version {record['record_version']!r} is not one this package reads "
            f"({', '.join(map(str, RECORD_VERSIONS))}); update lightning-kd."
        )
    if record.get("status") != "complete":
        raise SummaryError(f"{path}: status {record.get('status')!r}, not 'complete': the run did not finish.")
    if metric != "val/acc1":
        raise SummaryError(f"{path}: a fidelity record holds val/acc1 only, not {metric!r}.")
    top1 = record.get("val_top1")
    if not isinstance(top1, list) or not top1 or not all(isinstance(v, (int, float)) for v in top1):
        raise SummaryError(f"{path}: 'val_top1' must be a non-empty list of per-epoch top-1 values (percent).")
    if any(not 0.0 <= v <= 100.0 for v in top1):
        raise SummaryError(f"{path}: 'val_top1' values outside [0, 100]; records hold top-1 in percent.")
    preset_path, seed = record.get("preset_path"), record.get("seed")
    if not isinstance(preset_path, str) or not isinstance(seed, int) or isinstance(seed, bool):
        raise SummaryError(f"{path}: a record needs its 'preset_path' (a string) and 'seed' (an integer).")
    extra_args = json.dumps(record.get("extra_args", []))
    return RunResult(
        folder=path,
        preset=_record_preset(preset_path),
        seed=seed,
        best=max(float(v) for v in top1),
        last=float(top1[-1]),
        epochs=len(top1),
        max_epochs=len(top1),
        recipe=(("extra_args", extra_args),),
    )


def summarize(paths: Sequence[str], metric: str = "val/acc1") -> tuple[list[PresetSummary], list[str]]:
    """Group the runs under ``paths`` by preset and compute their statistics.

    Args:
        paths: Run folders, folders above them, ``metrics.csv`` files, or glob patterns.
        metric: The logged accuracy to summarize.

    Returns:
        The summaries (paper-table order first, then by name; one per preset, run group and recipe), and one
        line per run that is left out (failed, or could not be read).

    Raises:
        SummaryError: When nothing matches, no ``metrics.csv`` exists, or none of them holds ``metric``.
    """
    runs: list[RunResult] = []
    problems: list[str] = []
    for path in _expand(paths):
        try:
            runs.append(read_record(path, metric) if path.suffix == ".json" else read_run(path, metric))
        except SummaryError as error:
            problems.append(str(error))
    if not runs:
        raise SummaryError("No run with a logged top-1 was found:\n  " + "\n  ".join(problems))
    # unfinished runs (in progress, or stopped early) get rows of their own: a 2-epoch run pooled with 15-epoch ones
    # would make the row's mean and std describe neither
    groups: dict[tuple[str, Path, Any, bool], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.preset, run.folder.parent, run.recipe, run.finished), []).append(run)
    order = {key: index for index, key in enumerate(PAPER_TOP1)}
    summaries = [
        PresetSummary(
            preset,
            group,
            tuple(sorted(members, key=lambda r: (r.seed is None, r.seed, str(r.folder)))),
            PAPER_TOP1.get(preset),
            _distinct(recipe, [key[2] for key in groups if key[0] == preset]),
        )
        for (preset, group, recipe, _), members in groups.items()
    ]
    summaries.sort(
        key=lambda s: (
            order.get(s.preset, len(order)),
            s.preset,
            str(s.group),
            s.runs[0].max_epochs or 0,
            s.distinct,
            not s.finished,
        )
    )
    return summaries, problems


def _distinct(recipe: Any, recipes: list[Any]) -> tuple[tuple[str, str], ...]:
    """The settings of ``recipe`` whose values are not the same in all ``recipes`` (those of one preset)."""
    if recipe is None:
        return (("config", "none"),) if len(set(recipes)) > 1 else ()
    known = [dict(r) for r in recipes if r is not None]
    keys = {key for r in known for key in r}
    mine = dict(recipe)
    return tuple((key, mine.get(key, "unset")) for key in sorted(keys) if len({r.get(key, "unset") for r in known}) > 1)


def _short_settings(distinct: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """``max_epochs=2, lr=0.1`` (the last part of each key, unless two keys share it), at most ``limit``."""
    last = [key.rsplit(".", 1)[-1] for key, _ in distinct]
    names = [short if last.count(short) == 1 else key for (key, _), short in zip(distinct, last, strict=True)]
    values = [value[1:-1] if value.startswith('"') else value for _, value in distinct]  # JSON strings unquoted
    text = ", ".join(f"{name}={value}" for name, value in zip(names[:limit], values[:limit], strict=True))
    return text + (f", +{len(distinct) - limit} more" if len(distinct) > limit else "")


def _stat(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _epochs(runs: Sequence[RunResult]) -> str:
    counts = sorted({run.epochs for run in runs})
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    unfinished = sum(not run.finished for run in runs)
    return f"{text} ({unfinished} unfinished)" if unfinished else text


def format_markdown(summaries: Sequence[PresetSummary], problems: Sequence[str] = ()) -> str:
    """A Markdown table: one row per preset, mean ± std (n - 1) in percent, the paper's number and the gap."""
    groups_of: dict[str, set[Path]] = {}
    for s in summaries:
        groups_of.setdefault(s.preset, set()).add(s.group)
    repeated = {preset for preset, groups in groups_of.items() if len(groups) > 1}
    lines = [
        "| preset | n | seeds | epochs | best top-1 (%) | last top-1 (%) | paper (%) | best − paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    unverified = False
    for summary in summaries:
        best, best_std = summary.mean_std("best")
        last, last_std = summary.mean_std("last")
        details = [str(summary.group)] if summary.preset in repeated else []
        if summary.distinct:
            details.append(_short_settings(summary.distinct))
        if not summary.finished:
            details.append("unfinished")
        label = f"{summary.preset} ({'; '.join(details)})" if details else summary.preset
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
    if any(summary.distinct for summary in summaries):
        notes.append(
            "Runs of one preset are pooled only when their config.yaml settings are equal but for the seed and the "
            "per-run paths; the settings in parentheses tell the rows of a preset apart."
        )
    if unverified:
        notes.append("\\* not checked against the paper's PDF (lightning_kd/apps/paper_results.py).")
    if any(not run.finished for summary in summaries for run in summary.runs):
        notes.append(
            "Unfinished runs (fewer logged epochs than max_epochs: in progress, or stopped early) are rows of their "
            "own, read as they stand."
        )
    if problems:
        notes += ["", "Runs left out:", *(f"- {problem}" for problem in problems)]
    return "\n".join(lines + notes) + "\n"


def ls_verdicts(summaries: Sequence[PresetSummary]) -> list[str]:
    """One verdict line per method run with and without logit standardization (a preset whose method folder is
    ``<m>_ls`` beside the same preset with ``<m>``, in the CIFAR and the ImageNet layout alike), by the fidelity
    tables' rule (:func:`lightning_kd.apps.verdict.verdict`).

    Only finished runs count (an unfinished run's best epoch is not yet its best). A preset whose finished runs
    form several rows (different recipes or run groups) is not compared: which rows belong together is the
    reader's call, and the line says so.
    """
    rows: dict[str, list[PresetSummary]] = {}
    for summary in summaries:
        rows.setdefault(summary.preset, [])
        if summary.finished:
            rows[summary.preset].append(summary)
    lines = []
    for preset, mine in rows.items():
        parts = preset.split("/")
        methods = [i for i, part in enumerate(parts) if part.endswith("_ls")]
        if not methods:
            continue
        base_parts = list(parts)
        base_parts[methods[-1]] = parts[methods[-1]][: -len("_ls")]
        base_preset = "/".join(base_parts)
        if base_preset not in rows:
            continue
        name, base_name = _method_label(parts[methods[-1]]), _method_label(base_parts[methods[-1]])
        base = rows[base_preset]
        if len(mine) > 1 or len(base) > 1:
            lines.append(
                f"{name} vs {base_name}: not compared: {preset} has {len(mine)} and {base_preset} {len(base)} rows of "
                "finished runs (different recipes or run groups, above); summarize the runs of one recipe together"
            )
            continue
        best = [run.best for summary in mine for run in summary.runs]
        base_best = [run.best for summary in base for run in summary.runs]
        lines.append(verdict(name, best, base_name, base_best))
    return lines


def _method_label(method: str) -> str:
    base, ls = (method[: -len("_ls")], True) if method.endswith("_ls") else (method, False)
    return base.upper() + ("+LS" if ls else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m lightning_kd.apps.summarize PATH... [--output FILE]``; returns the exit code."""
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
    verdicts = ls_verdicts(summaries)
    if verdicts:
        table += (
            "\nWith and without logit standardization (best top-1 of finished runs; a gain is resolved beyond "
            f"{SE_THRESHOLD:g} SE of the difference):\n"
        )
        table += "".join(f"- {line}\n" for line in verdicts)
    print(table, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
