"""Reproduce the paper's CIFAR-100 tables on GPUs: every preset x 4 seeds, then the summary against the paper.

Each run is ``python -m lightning_kd fit --config configs/cifar100/<method>/<pair>.yaml --seed_everything S`` on one
GPU (``CUDA_VISIBLE_DEVICES`` set per run); the runs are queued over the given GPUs, one run per GPU at a time.
Teachers come from a folder of the published ``<teacher>_vanilla/ckpt_epoch_240.pth`` files (``--teachers-dir``,
the layout of the mdistiller release's cifar_teachers.tar), or are trained first with
``configs/cifar100/teachers/<teacher>.yaml`` (``--train-teachers``; their last checkpoint, the counterpart of
``ckpt_epoch_240.pth``, is the teacher).

Runs land in ``<output>/cifar100/<method>/<pair>/seed_<S>/`` (config, metrics, checkpoints) with a log beside them;
a finished run gets ``reproduce.json`` and is skipped when the script is started again, so an interrupted
reproduction resumes where it stopped (an unfinished run is moved aside to ``seed_<S>.incomplete-<k>`` and started
over). At the end, ``lightning_kd.apps.summarize`` writes ``<output>/cifar100_summary.md``: mean ± std over the
seeds of the best and last top-1 of each preset, beside the paper's number.

Examples::

    python benchmarks/reproduce_cifar.py --teachers-dir download_ckpts/cifar_teachers --gpus 0 1 2 3
    python benchmarks/reproduce_cifar.py --train-teachers --methods kd kd_ls --pairs resnet32x4_resnet8x4
    python benchmarks/reproduce_cifar.py --teachers-dir download_ckpts/cifar_teachers --dry-run
    python benchmarks/reproduce_cifar.py --teachers-dir download_ckpts/cifar_teachers --fast --img-per-s 20000
    python benchmarks/reproduce_cifar.py --teachers-dir ... -- --trainer.precision bf16-mixed   # passed to every fit
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_kd.apps import summarize  # noqa: E402
from lightning_kd.apps.paper_results import CIFAR_METHODS, CIFAR_PAIRS, CIFAR_TEACHER_STUDENT  # noqa: E402

PAPER_SEEDS = (0, 1, 2, 3)  # the paper reports the mean of 4 runs (official repo issue #12)
TRAIN_IMAGES = 50_000
DONE_FILE = "reproduce.json"


@dataclass
class Job:
    """One ``lightning_kd fit`` run."""

    label: str
    config: Path
    run_dir: Path  # <save_dir>/<name>/<version>: the CSV logger's folder
    seed: int
    extra: list[str] = field(default_factory=list)
    more_configs: list[Path] = field(default_factory=list)  # further --config files, merged over the preset

    @property
    def done(self) -> bool:
        return (self.run_dir / DONE_FILE).is_file()

    def command(self, python: str, fit_args: Sequence[str]) -> list[str]:
        save_dir, name, version = self.run_dir.parent.parent, self.run_dir.parent.name, self.run_dir.name
        return [
            python,
            "-m",
            "lightning_kd",
            "fit",
            "--config",
            str(self.config),
            *(arg for path in self.more_configs for arg in ("--config", str(path))),
            "--seed_everything",
            str(self.seed),
            "--trainer.accelerator",
            "gpu",
            "--trainer.devices",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(self.run_dir.parent),
            "--trainer.logger.init_args.save_dir",
            str(save_dir),
            "--trainer.logger.init_args.name",
            name,
            "--trainer.logger.init_args.version",
            version,
            *self.extra,
            *fit_args,
        ]


TEACHER_OF = {f"{teacher}_{student}": teacher for teacher, student in CIFAR_TEACHER_STUDENT}


def teachers_of(pairs: Sequence[str]) -> list[str]:
    """The teachers of the given pairs, in first-seen order."""
    return list(dict.fromkeys(TEACHER_OF[pair] for pair in pairs))


def published_teacher(teachers_dir: Path, teacher: str) -> Path:
    """The reference layout of the published teachers: ``<dir>/<teacher>_vanilla/ckpt_epoch_240.pth``."""
    return teachers_dir / f"{teacher}_vanilla" / "ckpt_epoch_240.pth"


def teacher_job(configs: Path, output: Path, teacher: str) -> Job:
    return Job(
        f"teacher {teacher}", configs / "teachers" / f"{teacher}.yaml", output / "teachers" / teacher / "seed_0", 0
    )


def trained_teacher(job: Job) -> Path:
    """The last checkpoint of a teacher run (epoch 240, as ``ckpt_epoch_240.pth``)."""
    return job.run_dir / "checkpoints" / "last.ckpt"


def plan(args: argparse.Namespace) -> tuple[list[Job], list[Job], list[str]]:
    """The teacher jobs, the distillation jobs and the notes (missing teacher files) for the parsed arguments."""
    output = args.output / "cifar100"
    teacher_jobs: list[Job] = []
    weights: dict[str, Path] = {}
    notes: list[str] = []
    for teacher in teachers_of(args.pairs):
        if args.train_teachers:
            job = teacher_job(args.configs, output, teacher)
            job.extra = ["--data.init_args.data_dir", str(args.data_dir)]
            teacher_jobs.append(job)
            weights[teacher] = trained_teacher(job)
        else:
            weights[teacher] = published_teacher(args.teachers_dir, teacher)
            if not weights[teacher].is_file():
                notes.append(f"missing teacher file {weights[teacher]}")
    jobs = []
    for method in args.methods:
        for pair in args.pairs:
            config = args.configs / method / f"{pair}.yaml"
            if not config.is_file():
                raise FileNotFoundError(f"Preset {config} not found: generate it with tools/make_presets.py.")
            for seed in args.seeds:
                job = Job(f"{method}/{pair} seed {seed}", config, output / method / pair / f"seed_{seed}", seed)
                job.extra = [
                    "--model.init_args.teacher_weights",
                    str(weights[TEACHER_OF[pair]]),
                    "--data.init_args.data_dir",
                    str(args.data_dir),
                ]
                if args.fast and not _two_views(config):
                    job.more_configs = [args.configs / "fast.yaml"]
                jobs.append(job)
    return teacher_jobs, jobs, notes


def _two_views(config: Path) -> bool:
    return bool(yaml.safe_load(config.read_text())["data"]["init_args"].get("two_views"))


def estimate_gpu_hours(jobs: Sequence[Job], images_per_second: float) -> float:
    """GPU-hours of the jobs' training epochs at a given distillation throughput (validation not counted).

    Work per run = max_epochs x 50,000 images x views (MLKD runs both networks on 2 views per image).
    """
    seconds = 0.0
    for job in jobs:
        config = yaml.safe_load(job.config.read_text())
        views = 2 if _two_views(job.config) else 1
        seconds += config["trainer"]["max_epochs"] * TRAIN_IMAGES * views / images_per_second
    return seconds / 3600


def _set_aside(run_dir: Path) -> None:
    """Move an unfinished run out of the way (never delete what a run wrote)."""
    if not run_dir.exists():
        return
    k = 1
    while (target := run_dir.with_name(f"{run_dir.name}.incomplete-{k}")).exists():
        k += 1
    run_dir.rename(target)
    print(f"moved the unfinished run {run_dir} to {target}", flush=True)


def run_queue(jobs: Sequence[Job], gpus: Sequence[str], python: str, fit_args: Sequence[str]) -> list[Job]:
    """Run the jobs, one per GPU at a time; return the failed ones."""
    pending: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        pending.put(job)
    failed: list[Job] = []
    lock = threading.Lock()

    def worker(gpu: str) -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            _set_aside(job.run_dir)
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = job.run_dir.with_name(job.run_dir.name + ".log")
            command = job.command(python, fit_args)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            print(f"[gpu {gpu}] start {job.label}: log {log}", flush=True)
            start = time.monotonic()
            with log.open("w") as out:
                out.write(shlex.join(command) + "\n")
                out.flush()
                code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            seconds = time.monotonic() - start
            if code == 0 and (job.run_dir / "metrics.csv").is_file():
                record = {"label": job.label, "seed": job.seed, "gpu": gpu, "seconds": round(seconds, 1)}
                (job.run_dir / DONE_FILE).write_text(json.dumps({**record, "command": command}, indent=2) + "\n")
                print(f"[gpu {gpu}] done {job.label} in {seconds / 60:.1f} min", flush=True)
            else:
                with lock:
                    failed.append(job)
                print(f"[gpu {gpu}] FAILED {job.label} (exit {code}): see {log}", flush=True)

    threads = [threading.Thread(target=worker, args=(gpu,), daemon=True) for gpu in gpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, fit_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Arguments after `--` are passed to every `fit`."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--teachers-dir", type=Path, help="folder of <teacher>_vanilla/ckpt_epoch_240.pth files")
    source.add_argument("--train-teachers", action="store_true", help="train the teachers first (teacher presets)")
    parser.add_argument("--methods", nargs="+", default=list(CIFAR_METHODS), choices=CIFAR_METHODS, metavar="M")
    parser.add_argument("--pairs", nargs="+", default=list(CIFAR_PAIRS), choices=CIFAR_PAIRS, metavar="PAIR")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(PAPER_SEEDS))
    parser.add_argument("--gpus", nargs="+", help="GPU ids (default: all visible); one run per GPU at a time")
    parser.add_argument("--output", type=Path, default=Path("runs/reproduce"), help="root of the run folders")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder of cifar-100-python/")
    parser.add_argument("--configs", type=Path, default=REPO / "configs" / "cifar100", help="preset folder")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="add configs/cifar100/fast.yaml (CUDA graph, GPU-resident data, bf16) to every preset but MLKD's",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs lightning_kd")
    parser.add_argument("--img-per-s", type=float, default=5000.0, help="throughput for the GPU-hours estimate")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the estimate; run nothing")
    args = parser.parse_args(argv)
    args.fit_args = fit_args
    # absolute paths: the runs start in the repository root
    args.output, args.data_dir, args.configs = args.output.resolve(), args.data_dir.resolve(), args.configs.resolve()
    if args.teachers_dir is not None:
        args.teachers_dir = args.teachers_dir.resolve()
    if args.fast and not (args.configs / "fast.yaml").is_file():
        parser.error(f"--fast needs {args.configs / 'fast.yaml'}, which does not exist")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    teacher_jobs, jobs, notes = plan(args)
    todo_teachers = [job for job in teacher_jobs if not job.done]
    todo = [job for job in jobs if not job.done]
    hours = estimate_gpu_hours(todo, args.img_per_s)
    print(
        f"{len(jobs)} distillation runs ({len(jobs) - len(todo)} already finished), {len(teacher_jobs)} teachers to "
        f"train ({len(teacher_jobs) - len(todo_teachers)} finished); about {hours:.0f} GPU-hours of distillation "
        f"left at {args.img_per_s:.0f} img/s"
    )
    for note in notes:
        print(f"note: {note}")
    if args.dry_run:
        gpus = args.gpus or ["<gpu>"]
        print(f"runs are queued over GPUs {', '.join(gpus)}, one run per GPU; each with CUDA_VISIBLE_DEVICES=<gpu>")
        for job in [*teacher_jobs, *jobs]:
            prefix = "# finished, skipped: " if job.done else ""
            print(prefix + shlex.join(job.command(args.python, args.fit_args)))
        return 0
    if notes:
        print(
            "error: teacher checkpoints are missing. Download cifar_teachers.tar from the mdistiller GitHub release "
            "`checkpoints` and untar it, then pass its cifar_teachers/ folder as --teachers-dir; or use "
            "--train-teachers (docs/reproduction.md).",
            file=sys.stderr,
        )
        return 2
    gpus = args.gpus or _visible_gpus()
    if not gpus:
        print("error: no GPU visible; pass --gpus or set CUDA_VISIBLE_DEVICES.", file=sys.stderr)
        return 2
    from lightning_kd.data import CIFAR100DataModule

    if not (args.data_dir / "cifar-100-python").is_dir():
        # one download before the parallel runs, so they never write the same files at once
        CIFAR100DataModule(str(args.data_dir), download=True).prepare_data()
    failed = run_queue(todo_teachers, gpus, args.python, args.fit_args)
    if failed:
        print(f"error: {len(failed)} teacher run(s) failed; the distillation runs need them.", file=sys.stderr)
        return 1
    absent = [trained_teacher(job) for job in teacher_jobs if not trained_teacher(job).is_file()]
    if absent:
        print(
            f"error: teacher checkpoint(s) {', '.join(map(str, absent))} not written. The teacher presets must keep "
            "the run-folder convention (ModelCheckpoint without dirpath, save_last: true).",
            file=sys.stderr,
        )
        return 1
    failed = run_queue(todo, gpus, args.python, args.fit_args)
    summary = args.output / "cifar100_summary.md"
    code = summarize.main([str(args.output / "cifar100"), "--output", str(summary)])
    print(f"summary written to {summary}" if code == 0 else "no summary: no run logged a top-1")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(job.label for job in failed)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
