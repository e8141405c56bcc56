"""The LS hyperparameter grid without W&B: one ``lightning-kd fit`` per (base temperature, KD weight) point.

The question users ask most about logit standardization is which base temperature and KD weight to use; the
paper's authors suggest a grid of base temperature 2-3 by KD weight 3-15 (official issue #19). This is
the same grid as the W&B sweep ``configs/sweeps/ls_grid.yaml``, as a plain loop: each point runs the real
command line (``lightning-kd fit --config PRESET ... --config <out>/<point>.yaml``, in this process, one point
after the other), with the point's settings in a small extra config, and the table of best validation top-1 per
point is printed at the end (and written to ``<out>/results.md``).

Usage::

    python -m lightning_kd.apps.sweep --config configs/cifar100/kd_ls/resnet32x4_resnet8x4.yaml \\
        --temperatures 2 3 --kd-weights 3 6 9 12 15 [--out runs/sweeps/ls_grid] [-- --trainer.max_epochs=60 ...]

Arguments after ``--`` go to every ``lightning-kd fit`` unchanged. Each point keeps its own run folder (the
preset's ``runs/<group>/<name>/version_N``, listed in the table); ``<out>/<point>.yaml`` holds the point's
settings and ``<out>/<point>.json`` its result (:class:`~lightning_kd.callbacks.FitResult`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

#: the grid of configs/sweeps/ls_grid.yaml (base temperature x KD weight)
TEMPERATURES = (2.0, 3.0)
KD_WEIGHTS = (3.0, 6.0, 9.0, 12.0, 15.0)


@dataclass(frozen=True)
class GridPoint:
    """One (base temperature, KD weight) setting of the loss."""

    temperature: float
    kd_weight: float

    @property
    def name(self) -> str:
        """File-name-safe label, e.g. ``T2_kd9``."""
        return f"T{self.temperature:g}_kd{self.kd_weight:g}"

    def overrides(self, result_file: Path) -> dict:
        """The point's extra config: the loss settings, and a :class:`FitResult` callback writing ``result_file``."""
        return {
            "model": {
                "init_args": {"loss": {"init_args": {"temperature": self.temperature, "kd_weight": self.kd_weight}}}
            },
            "trainer": {
                # `+` appends to the preset's callbacks (jsonargparse list append) instead of replacing them
                "callbacks+": [
                    {"class_path": "lightning_kd.callbacks.FitResult", "init_args": {"path": str(result_file)}}
                ]
            },
        }


@dataclass(frozen=True)
class PointResult:
    """What one fit of the grid reached (accuracies as fractions)."""

    point: GridPoint
    best_val_acc1: float | None
    last_val_acc1: float | None
    run_folder: str | None


def grid(temperatures: list[float], kd_weights: list[float]) -> list[GridPoint]:
    """Every (temperature, kd_weight) pair, temperatures outermost.

    Raises:
        ValueError: for an empty list, a non-positive temperature or a negative weight.
    """
    if not temperatures or not kd_weights:
        raise ValueError(
            f"The grid needs at least one temperature and one KD weight, got {temperatures}, {kd_weights}."
        )
    for t in temperatures:
        if t <= 0:
            raise ValueError(f"Temperatures must be > 0, got {t}. LS uses base temperatures such as 2 or 3.")
    for w in kd_weights:
        if w < 0:
            raise ValueError(f"KD weights must be >= 0, got {w}.")
    return [GridPoint(float(t), float(w)) for t, w in itertools.product(temperatures, kd_weights)]


def run_point(point: GridPoint, configs: list[str], extra_args: list[str], out: Path) -> PointResult:
    """Fit one grid point through the command line (in this process) and read back its result.

    Raises:
        RuntimeError: if the fit fails (the CLI has printed why).
        FileNotFoundError: if the fit ended without writing its result.
    """
    from lightning_kd.cli import main as cli_main  # imports torch and Lightning: only when a point runs

    out.mkdir(parents=True, exist_ok=True)
    result_file = (out / f"{point.name}.json").resolve()
    result_file.unlink(missing_ok=True)  # never read a previous sweep's number
    point_config = out / f"{point.name}.yaml"
    point_config.write_text(yaml.safe_dump(point.overrides(result_file), sort_keys=False))
    args = ["fit"]
    for config in configs:
        args += ["--config", config]
    args += ["--config", str(point_config.resolve()), *extra_args]
    print(f"==> {point.name}: lightning-kd {' '.join(args)}", flush=True)
    try:
        status = cli_main(args)
    finally:
        _finish_wandb_run()
    if status != 0:
        raise RuntimeError(f"The fit of {point.name} failed (exit status {status}); its error is printed above.")
    if not result_file.is_file():
        raise FileNotFoundError(f"The fit of {point.name} finished without writing {result_file}.")
    result = json.loads(result_file.read_text())
    return PointResult(point, result["best_val_acc1"], result["last_val_acc1"], result["run_folder"])


def _finish_wandb_run() -> None:
    # Lightning's WandbLogger leaves its run open and attaches to an open run: without this every point after the
    # first would log into the first point's W&B run (with configs/loggers/wandb.yaml)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def markdown_table(results: list[PointResult]) -> str:
    """The sweep's table, accuracies in percent; the best point is marked."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    scored = [r.best_val_acc1 for r in results if r.best_val_acc1 is not None]
    top = max(scored) if scored else None
    lines = [
        "| base temperature | KD weight | val top-1 best (%) | val top-1 last (%) | run folder |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        mark = " **(best)**" if top is not None and r.best_val_acc1 == top else ""
        lines.append(
            f"| {r.point.temperature:g} | {r.point.kd_weight:g} | {percent(r.best_val_acc1)}{mark} | "
            f"{percent(r.last_val_acc1)} | {r.run_folder or 'n/a'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table and write it to ``<out>/results.md``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", action="append", required=True, help="preset (repeatable: e.g. a preset, then a logger config)"
    )
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES), help="base temperatures")
    parser.add_argument("--kd-weights", type=float, nargs="+", default=list(KD_WEIGHTS), help="KD loss weights")
    parser.add_argument("--out", type=Path, default=Path("runs/sweeps/ls_grid"), help="sweep folder")
    args = parser.parse_args(argv)
    for config in args.config:
        if not Path(config).is_file():
            parser.error(f"--config {config}: no such file (paths are relative to {Path.cwd()}).")
    points = grid(args.temperatures, args.kd_weights)
    start = time.perf_counter()
    results = [run_point(p, args.config, extra, args.out) for p in points]
    table = markdown_table(results)
    (args.out / "results.md").write_text(table + "\n")
    print(f"\nSweep of {len(points)} points finished in {time.perf_counter() - start:.0f} s.\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
