"""Per-step overhead of ``DistillationModule`` on the CPU, where the math is negligible.

Three loops do the same math on tiny linear networks (3x8x8 inputs flattened, 10 classes): a teacher forward
under ``no_grad``, a student forward, the logit-standardized KD loss
(``lightning_kd.losses.KD(temperature=2, ce_weight=0.1, kd_weight=9, standardize=True)``) and an SGD step:

- **A** a plain PyTorch loop over the same ``DataLoader``;
- **B** a bare ``LightningModule`` (no logging, no metrics) under ``Trainer.fit``;
- **C** ``DistillationModule`` under the same ``Trainer`` settings (same logger, same flags).

They run interleaved in one process (several rounds, the order rotated each round) and the medians over rounds
are reported: ms per step of each, ``C - B`` (what this package adds over Lightning; the target is at most
0.5 ms) and ``B - A`` (what Lightning adds over a plain loop), as medians of the per-round differences and as
ratios. A step is timed from one batch's start to the next one's (data fetching, hooks and logging included),
after ``--warmup`` steps, in wall time and in this process's CPU time (robust to other load on a shared
machine; on a quiet one the two agree).

    python benchmarks/overhead.py                      # defaults: 7 rounds of 300 steps, batch 64, 1 thread
    python benchmarks/overhead.py --rounds 7 --steps 500
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the shared reference step lives beside this script
    sys.path.insert(0, str(ROOT))

from benchmarks.reference_step import reference_step  # noqa: E402
from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402

NUM_CLASSES = 10
SHAPE = (3, 8, 8)


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(SHAPE[0] * SHAPE[1] * SHAPE[2], NUM_CLASSES))


def _loss() -> KD:
    return KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def _loader(steps: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = steps * batch_size
    data = TensorDataset(torch.randn(n, *SHAPE, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=False)


class _BareModule(LightningModule):
    """The same math as ``DistillationModule``'s step, with nothing else: no logging, no metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.teacher, self.loss = _net(), _net(), _loss()
        self.teacher.requires_grad_(False)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        terms = self.loss(self.student(inputs), teacher_logits, targets)
        return terms["ce"] + terms["kd"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _sgd(self.student.parameters())


class _Clock:
    """Wall and process-CPU time between two marks, per step.

    The CPU time of this process hardly moves when other processes load the machine (wall time does), and with
    one thread and an in-process loader it is the whole cost of a step: on a quiet machine the two agree.
    """

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.marks: dict[str, tuple[float, float]] = {}

    def tick(self, index: int) -> None:
        if index in (self.warmup, self.last):
            self.marks["start" if index == self.warmup else "end"] = (time.perf_counter(), time.process_time())

    def ms_per_step(self) -> tuple[float, float]:
        (wall0, cpu0), (wall1, cpu1) = self.marks["start"], self.marks["end"]
        steps = self.last - self.warmup
        return (wall1 - wall0) * 1e3 / steps, (cpu1 - cpu0) * 1e3 / steps


class _StepClock(Callback):
    """Ticks a :class:`_Clock` at the start of every training batch."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.tick(batch_idx)


def plain_loop(steps: int, warmup: int, batch_size: int, tmp: str) -> tuple[float, float]:
    """(A) ms per step (wall, CPU) of a plain PyTorch loop."""
    torch.manual_seed(0)
    student, teacher, loss = _net(), _net(), _loss()
    teacher.requires_grad_(False).eval()
    optimizer = _sgd(student.parameters())
    clock = _Clock(warmup, steps - 1)
    for i, (inputs, targets) in enumerate(_loader(steps, batch_size)):
        clock.tick(i)
        reference_step(student, teacher, loss, optimizer, inputs, targets)
    return clock.ms_per_step()


def _fit(module: LightningModule, steps: int, warmup: int, batch_size: int, tmp: str) -> tuple[float, float]:
    clock = _Clock(warmup, steps - 1)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        logger=CSVLogger(tmp, name="overhead"),
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_StepClock(clock)],
    )
    trainer.fit(module, _loader(steps, batch_size))
    return clock.ms_per_step()


def bare_module(steps: int, warmup: int, batch_size: int, tmp: str) -> tuple[float, float]:
    """(B) ms per step (wall, CPU) of a bare LightningModule under ``Trainer.fit``."""
    torch.manual_seed(0)
    return _fit(_BareModule(), steps, warmup, batch_size, tmp)


def distillation_module(steps: int, warmup: int, batch_size: int, tmp: str) -> tuple[float, float]:
    """(C) ms per step (wall, CPU) of ``DistillationModule`` under the same ``Trainer``."""
    torch.manual_seed(0)
    module = DistillationModule(_net(), _net(), _loss(), optimizer=_sgd, lr_scheduler=None)
    return _fit(module, steps, warmup, batch_size, tmp)


VARIANTS: dict[str, Callable[[int, int, int, str], tuple[float, float]]] = {
    "A plain loop": plain_loop,
    "B bare LightningModule": bare_module,
    "C DistillationModule": distillation_module,
}


def run(rounds: int, steps: int, warmup: int, batch_size: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) ms per step of every variant in every round; the order rotates so none always goes first."""
    if steps - 1 - warmup < 1:
        raise ValueError(f"steps={steps} must exceed warmup + 1 = {warmup + 1}: raise --steps or lower --warmup.")
    names = list(VARIANTS)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(VARIANTS[name](steps, warmup, batch_size, tmp))
    return times


def summarize(times: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
    """Medians per variant, and medians of the per-round differences (each round runs B and C back to back)."""
    a, b, c = (times[name] for name in VARIANTS)
    summary: dict[str, dict[str, float]] = {}
    for k, metric in enumerate(("wall", "cpu")):
        med = {key: statistics.median(t[k] for t in series) for key, series in zip("ABC", (a, b, c), strict=True)}
        med["C-B"] = statistics.median(tc[k] - tb[k] for tb, tc in zip(b, c, strict=True))
        med["B-A"] = statistics.median(tb[k] - ta[k] for ta, tb in zip(a, b, strict=True))
        summary[metric] = med
    return summary


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (one epoch)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps at the start of each run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|num_workers|no `val_dataloader`).*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banner per run

    load = os.getloadavg()[0]
    times = run(args.rounds, args.steps, args.warmup, args.batch_size)
    summary = summarize(times)
    print(
        f"# CPU ({os.cpu_count()} cores, load {load:.1f} at start), torch {torch.__version__}, {args.threads} "
        f"thread(s), batch {args.batch_size}, {args.rounds} rounds x {args.steps - 1 - args.warmup} timed steps"
    )
    print("| loop | wall ms/step (median) | CPU ms/step (median) | wall, every round |")
    print("|---|---|---|---|")
    for (name, series), key in zip(times.items(), "ABC", strict=True):
        rounds = ", ".join(f"{t[0]:.2f}" for t in series)
        print(f"| {name} | {summary['wall'][key]:.3f} | {summary['cpu'][key]:.3f} | {rounds} |")
    for metric in ("wall", "cpu"):
        m = summary[metric]
        print(
            f"{metric:4s}: C - B = {m['C-B']:+.3f} ms/step (C/B {m['C'] / m['B']:.2f}x; target <= 0.5 ms), "
            f"B - A = {m['B-A']:+.3f} ms/step (B/A {m['B'] / m['A']:.2f}x)"
        )
    return summary


if __name__ == "__main__":
    main()
