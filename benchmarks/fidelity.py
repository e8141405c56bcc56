"""Fidelity benchmark: train the CPU-scale presets over several seeds through the CLI and tabulate top-1.

Each (preset, seed) pair is one ``python -m lightning_kd fit --config PRESET --seed_everything SEED [EXTRA]`` in a
subprocess. When it finishes, a small JSON record lands in the results directory (preset, seed, best and last
validation top-1, wall time, run folder, command). A rerun skips the pairs that have a complete record, so the runner
can be stopped and started again at will; a pair whose run was interrupted (no record, or a partial one) is run
again from scratch. Then a markdown table of mean ± sample std over seeds is written, with a verdict line that
weighs the gain of KD+LS over KD and of KD over CE against the seed spread (rule in :func:`compare`).

Examples::

    # the CPU-scale protocol of docs/fidelity.md, in the background (survives the shell; resumable)
    setsid nohup nice -n 10 .venv/bin/python benchmarks/fidelity.py --seeds 0 1 2 > /tmp/fidelity.log 2>&1 &
    # only rebuild the table from the records that exist
    .venv/bin/python benchmarks/fidelity.py --summarize-only
    # a quick smoke run (a different protocol: use another results directory)
    .venv/bin/python benchmarks/fidelity.py --results-dir /tmp/fid --extra-args="--trainer.max_epochs 1"

The run folder of a run is found as the one new ``version_N`` folder under the preset's CSVLogger
``save_dir/name`` (relative to the working directory, like the preset's data paths), so ``--extra-args`` must not
move the logger.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from lightning_kd.apps.verdict import SE_THRESHOLD, sample_std, verdict

REPO = Path(__file__).resolve().parents[1]
PRESET_DIR = Path("configs/cifar100/cpu_scale")
DEFAULT_PRESETS = tuple(str(PRESET_DIR / f"{name}.yaml") for name in ("ce", "kd", "kd_ls"))
DEFAULT_RESULTS = Path("benchmarks/fidelity_results")
RECORD_VERSION = 1
# the fields a complete record must hold; anything less is a partial record and is run again
RECORD_FIELDS = (
    "preset",
    "preset_path",
    "seed",
    "best_top1",
    "last_top1",
    "val_top1",
    "wall_time_s",
    "run_dir",
    "command",
    "extra_args",
)
# (better, baseline) preset names compared by the verdict, in the order they are reported
COMPARISONS = (("kd_ls", "kd"), ("kd", "ce"), ("dkd_ls", "dkd"), ("mlkd_ls", "mlkd"), ("ctkd_ls", "ctkd"))
LABELS = {
    "ce": "CE",
    "kd": "KD",
    "kd_ls": "KD+LS",
    "dkd": "DKD",
    "dkd_ls": "DKD+LS",
    "mlkd": "MLKD",
    "mlkd_ls": "MLKD+LS",
    "ctkd": "CTKD",
    "ctkd_ls": "CTKD+LS",
}


def label(preset: str) -> str:
    """Display name of a preset (``kd_ls`` -> ``KD+LS``); unknown names are shown as they are."""
    return LABELS.get(preset, preset)


def record_path(results_dir: Path, preset: str, seed: int) -> Path:
    """Where the record of one (preset, seed) run lives."""
    return results_dir / f"{preset}__seed{seed}.json"


def load_record(path: Path) -> tuple[dict | None, str]:
    """Read one record; returns ``(record, "")`` when complete, else ``(None, why it is not usable)``."""
    if not path.is_file():
        return None, "no record"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"partial record {path} ({err})"
    if not isinstance(record, dict):
        return None, f"partial record {path} (not a JSON object)"
    missing = [field for field in RECORD_FIELDS if field not in record]
    if missing:
        return None, f"partial record {path} (missing {', '.join(missing)})"
    if record.get("status") != "complete":
        return None, f"partial record {path} (status {record.get('status')!r})"
    return record, ""


def logger_folder(preset: Path) -> Path:
    """The ``save_dir/name`` folder under which the preset's CSVLogger creates ``version_N`` run folders."""
    config = yaml.safe_load(preset.read_text()) or {}
    logger = (config.get("trainer") or {}).get("logger")
    init_args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
    if "save_dir" not in init_args or "name" not in init_args:
        raise ValueError(
            f"{preset}: trainer.logger needs a CSVLogger with init_args.save_dir and init_args.name (the run-folder "
            "convention runs/<group>/<name>/version_N); the benchmark finds each run's metrics.csv there"
        )
    return Path(init_args["save_dir"]) / str(init_args["name"])


def version_folders(folder: Path) -> set[Path]:
    """The ``version_N`` run folders that exist under ``folder``."""
    return set(folder.glob("version_*")) if folder.is_dir() else set()


def read_val_top1(metrics_csv: Path) -> list[float]:
    """Validation top-1 (percent) of each epoch, in epoch order, from a CSVLogger ``metrics.csv``."""
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"{metrics_csv} does not exist: the run wrote no metrics")
    per_epoch: dict[int, float] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("val/acc1") not in (None, ""):
                per_epoch[int(row["epoch"])] = 100.0 * float(row["val/acc1"])
    if not per_epoch:
        raise ValueError(f"{metrics_csv} holds no val/acc1 value: did validation run?")
    return [per_epoch[epoch] for epoch in sorted(per_epoch)]


@dataclass(frozen=True)
class Plan:
    """The runs one invocation is responsible for: presets (by file) x seeds, seeds in the outer loop."""

    presets: tuple[Path, ...]
    seeds: tuple[int, ...]
    extra_args: tuple[str, ...]
    results_dir: Path

    @property
    def names(self) -> list[str]:
        return [preset.stem for preset in self.presets]

    def pairs(self) -> list[tuple[Path, int]]:
        # seed-major order: a first complete seed of every preset comes before any second seed
        return [(preset, seed) for seed in self.seeds for preset in self.presets]


def check_plan(plan: Plan) -> None:
    """Reject presets that do not exist, share a name, or records written under other extra arguments."""
    for preset in plan.presets:
        if not preset.is_file():
            raise FileNotFoundError(f"preset {preset} does not exist (paths are relative to {Path.cwd()})")
    names = plan.names
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"presets must have distinct file names (records are keyed by it): {duplicates}")
    if len(set(plan.seeds)) != len(plan.seeds):
        raise ValueError(f"--seeds repeats a seed: {list(plan.seeds)}")
    for preset, seed in plan.pairs():
        record, _ = load_record(record_path(plan.results_dir, preset.stem, seed))
        if record is not None and list(record["extra_args"]) != list(plan.extra_args):
            raise ValueError(
                f"{record_path(plan.results_dir, preset.stem, seed)} was run with extra args "
                f"{record['extra_args']}, not {list(plan.extra_args)}: mixing protocols in one table is wrong; "
                "use another --results-dir"
            )


def run_one(preset: Path, seed: int, plan: Plan) -> dict:
    """Train one (preset, seed) through the CLI and write its record; raises if the run fails."""
    command = [sys.executable, "-m", "lightning_kd", "fit", "--config", str(preset), "--seed_everything", str(seed)]
    command += plan.extra_args
    folder = logger_folder(preset)
    before = version_folders(folder)
    marker = record_path(plan.results_dir, preset.stem, seed).with_suffix(".running")
    marker.write_text(json.dumps({"pid": os.getpid(), "command": command, "started": _now()}))
    print(f"[fidelity] {_now()} start {preset.stem} seed {seed}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(command, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(
            f"{preset.stem} seed {seed} failed with exit code {completed.returncode}: {shlex.join(command)}"
        )
    new = sorted(version_folders(folder) - before)
    if len(new) != 1:
        raise RuntimeError(
            f"expected exactly one new run folder under {folder} after {preset.stem} seed {seed}, found "
            f"{[str(path) for path in new]} (does another process write there, or do --extra-args move the logger?)"
        )
    run_dir = new[0]
    val_top1 = read_val_top1(run_dir / "metrics.csv")
    record = {
        "record_version": RECORD_VERSION,
        "status": "complete",
        "preset": preset.stem,
        "preset_path": str(preset),
        "seed": seed,
        "best_top1": max(val_top1),
        "last_top1": val_top1[-1],
        "val_top1": val_top1,
        "epochs": len(val_top1),
        "wall_time_s": round(wall, 1),
        "run_dir": str(run_dir),
        "command": shlex.join(["python", *command[1:]]),
        "extra_args": list(plan.extra_args),
        "finished": _now(),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
    }
    _write_atomic(record_path(plan.results_dir, preset.stem, seed), json.dumps(record, indent=2) + "\n")
    marker.unlink(missing_ok=True)
    print(
        f"[fidelity] {_now()} done {preset.stem} seed {seed}: best {record['best_top1']:.2f} last "
        f"{record['last_top1']:.2f} in {wall / 60:.1f} min -> {run_dir}",
        flush=True,
    )
    return record


def run_plan(plan: Plan) -> None:
    """Run every pair of the plan that has no complete record, one at a time, holding the results-dir lock."""
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(plan.results_dir / ".runner.lock"):
        for preset, seed in plan.pairs():
            path = record_path(plan.results_dir, preset.stem, seed)
            record, why = load_record(path)
            if record is not None:
                print(f"[fidelity] skip {preset.stem} seed {seed}: complete record {path}", flush=True)
                continue
            if path.with_suffix(".running").exists() or why != "no record":
                print(f"[fidelity] redo {preset.stem} seed {seed}: interrupted earlier ({why})", flush=True)
            run_one(preset, seed, plan)


@dataclass(frozen=True)
class Summary:
    """Mean and sample std of best and last top-1 over the complete runs of one preset."""

    preset: str
    seeds: tuple[int, ...]
    best: tuple[float, ...]
    last: tuple[float, ...]
    wall_s: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.best)


def summarize(records: Sequence[dict], preset: str) -> Summary:
    """Collect the complete records of one preset, ordered by seed."""
    mine = sorted((r for r in records if r["preset"] == preset), key=lambda r: r["seed"])
    return Summary(
        preset=preset,
        seeds=tuple(r["seed"] for r in mine),
        best=tuple(float(r["best_top1"]) for r in mine),
        last=tuple(float(r["last_top1"]) for r in mine),
        wall_s=tuple(float(r["wall_time_s"]) for r in mine),
    )


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    std = sample_std(values)
    return f"{statistics.fmean(values):.2f} ± {std:.2f}" if std is not None else f"{values[0]:.2f} (1 run, no std)"


def compare(better: Summary, baseline: Summary) -> str:
    """One verdict clause: does ``better`` beat ``baseline`` on best top-1 by more than the seed spread?

    The rule is :func:`lightning_kd.apps.verdict.verdict` (shared with ``lightning-kd summarize``).
    """
    return verdict(label(better.preset), better.best, label(baseline.preset), baseline.best)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def unfinished(plan: Plan) -> list[str]:
    """One line per started run without a complete record: in progress or interrupted, and its epochs so far.

    A run is in progress while the runner that wrote its ``.running`` marker is alive. Its run folder is the first
    ``version_N`` whose ``config.yaml`` (written by the CLI at start) is not older than the marker.
    """
    lines = []
    for preset, seed in plan.pairs():
        path = record_path(plan.results_dir, preset.stem, seed)
        marker = path.with_suffix(".running")
        if not marker.is_file() or load_record(path)[0] is not None:
            continue
        try:
            info = json.loads(marker.read_text())
            pid, started = int(info["pid"]), datetime.fromisoformat(info["started"]).timestamp()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            lines.append(f"{preset.stem} seed {seed}: interrupted (unreadable marker {marker}: {err})")
            continue
        state = f"in progress (runner pid {pid})" if _alive(pid) else "interrupted (its runner is gone; rerun resumes)"
        folders = [
            v
            for v in version_folders(logger_folder(preset))
            if (v / "config.yaml").is_file()
            # the marker's start time has whole seconds
            and (v / "config.yaml").stat().st_mtime >= started - 1
        ]
        if not folders:
            lines.append(f"{preset.stem} seed {seed}: {state}, no run folder yet")
            continue
        run_dir = min(folders, key=lambda v: (v / "config.yaml").stat().st_mtime)
        try:
            top1 = read_val_top1(run_dir / "metrics.csv")
        except (FileNotFoundError, ValueError):
            top1 = []
        so_far = f": top-1 {', '.join(f'{v:.2f}' for v in top1)}" if top1 else ""
        lines.append(f"{preset.stem} seed {seed}: {state}, {len(top1)} epoch(s) validated in {run_dir}{so_far}")
    return lines


def render(plan: Plan) -> str:
    """The markdown table, the runs still missing, and the verdict line, from the complete records of the plan."""
    records: list[dict] = []
    missing: list[str] = []
    for preset, seed in plan.pairs():
        record, _ = load_record(record_path(plan.results_dir, preset.stem, seed))
        if record is None:
            missing.append(f"{preset.stem} seed {seed}")
        else:
            records.append(record)
    extra = " ".join(plan.extra_args) or "none"
    lines = [
        f"Validation top-1 (%) at the end of each epoch; best = max over epochs, last = final epoch; mean ± sample "
        f"std over the complete runs. Seeds planned: {', '.join(map(str, plan.seeds))}; extra args: {extra}.",
        "",
        "| preset | runs (seeds) | best top-1 | last top-1 | wall time per run (min) |",
        "|---|---|---|---|---|",
    ]
    summaries = {name: summarize(records, name) for name in plan.names}
    for name, summary in summaries.items():
        seeds = f"{summary.n} ({', '.join(map(str, summary.seeds))})" if summary.n else "0"
        walls = ", ".join(f"{wall / 60:.1f}" for wall in summary.wall_s) or "–"
        lines.append(f"| {label(name)} | {seeds} | {_mean_std(summary.best)} | {_mean_std(summary.last)} | {walls} |")
    lines += ["", "Missing runs: " + (", ".join(missing) if missing else "none") + "."]
    lines += [f"- {line}" for line in unfinished(plan)]
    clauses = [compare(summaries[a], summaries[b]) for a, b in COMPARISONS if a in summaries and b in summaries]
    lines += [
        "",
        f"Rule: on best top-1, a gain is resolved when the difference of means exceeds {SE_THRESHOLD:g} standard "
        "errors of the difference, SE = sqrt(s_a²/n_a + s_b²/n_b) with sample stds.",
        "",
        "Verdict: " + ("; ".join(clauses) if clauses else "no comparison among these presets") + ".",
    ]
    return "\n".join(lines) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    # a reader (or a rerun after a kill) sees either no record or a whole one
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another fidelity runner holds {lock_path}: wait for it, or use another --results-dir"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="preset YAML files")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (outer loop)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where the JSON records go")
    parser.add_argument("--table-out", type=Path, default=None, help="markdown table (default RESULTS_DIR/table.md)")
    parser.add_argument(
        "--extra-args",
        default="",
        help='extra CLI arguments for every run, one string: --extra-args="--trainer.max_epochs 1"',
    )
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild the table from the records")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the missing (preset, seed) pairs (unless ``--summarize-only``), write and print the table."""
    args = parse_args(argv)
    plan = Plan(
        presets=tuple(Path(p) for p in args.presets),
        seeds=tuple(args.seeds),
        extra_args=tuple(shlex.split(args.extra_args)),
        results_dir=args.results_dir,
    )
    check_plan(plan)
    if not args.summarize_only:
        run_plan(plan)
    table = render(plan)
    table_out = args.table_out or plan.results_dir / "table.md"
    table_out.parent.mkdir(parents=True, exist_ok=True)
    table_out.write_text(table)
    print(table, end="", flush=True)
    return table


if __name__ == "__main__":
    main()
