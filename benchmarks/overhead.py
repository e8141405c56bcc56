"""Per-step overhead of ``DistillationModule`` on the CPU, where the math is negligible.

Three loops do the same math on tiny linear networks (3x8x8 inputs flattened, 10 classes): a teacher forward
under ``no_grad``, a student forward, the logit-standardized KD loss
(``lightning_kd.losses.KD(temperature=2, ce_weight=0.1, kd_weight=9, standardize=True)``) and an SGD step:

- **A** a plain PyTorch loop over the same ``DataLoader``;
- **B** a bare ``LightningModule`` (no logging, no metrics) under ``Trainer.fit``;
- **C** ``DistillationModule`` under the same ``Trainer`` settings (same logger, same flags).

They run interleaved in one process (several rounds, the order rotated each round) and the medians over rounds
are reported: ms per step of each, ``C - B`` (what this package adds over Lightning; issue 7's target is at most
0.5 ms) and ``B - A`` (what Lightning adds over a plain loop), each also as a ratio. A step is timed from one
batch's start to the next one's (data fetching, hooks and logging included), after ``--warmup`` steps.

    python benchmarks/overhead.py                      # defaults: 5 rounds of 300 steps, batch 64, 1 thread
    python benchmarks/overhead.py --rounds 7 --steps 500
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_kd import DistillationModule
from lightning_kd.losses import KD

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


class _StepClock(Callback):
    """Wall time from the start of batch ``warmup`` to the start of the last batch."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx == self.last:
            self.end = time.perf_counter()


def plain_loop(steps: int, warmup: int, batch_size: int, tmp: str) -> float:
    """(A) ms per step of a plain PyTorch loop."""
    torch.manual_seed(0)
    student, teacher, loss = _net(), _net(), _loss()
    teacher.requires_grad_(False).eval()
    optimizer = _sgd(student.parameters())
    start = end = 0.0
    for i, (inputs, targets) in enumerate(_loader(steps, batch_size)):
        if i == warmup:
            start = time.perf_counter()
        elif i == steps - 1:
            end = time.perf_counter()
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        terms = loss(student(inputs), teacher_logits, targets)
        optimizer.zero_grad()
        (terms["ce"] + terms["kd"]).backward()
        optimizer.step()
    return (end - start) * 1e3 / (steps - 1 - warmup)


def _fit(module: LightningModule, steps: int, warmup: int, batch_size: int, tmp: str) -> float:
    clock = _StepClock(warmup, steps - 1)
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
        callbacks=[clock],
    )
    trainer.fit(module, _loader(steps, batch_size))
    return (clock.end - clock.start) * 1e3 / (steps - 1 - warmup)


def bare_module(steps: int, warmup: int, batch_size: int, tmp: str) -> float:
    """(B) ms per step of a bare LightningModule under ``Trainer.fit``."""
    torch.manual_seed(0)
    return _fit(_BareModule(), steps, warmup, batch_size, tmp)


def distillation_module(steps: int, warmup: int, batch_size: int, tmp: str) -> float:
    """(C) ms per step of ``DistillationModule`` under the same ``Trainer``."""
    torch.manual_seed(0)
    module = DistillationModule(_net(), _net(), _loss(), optimizer=_sgd, lr_scheduler=None)
    return _fit(module, steps, warmup, batch_size, tmp)


VARIANTS: dict[str, Callable[[int, int, int, str], float]] = {
    "A plain loop": plain_loop,
    "B bare LightningModule": bare_module,
    "C DistillationModule": distillation_module,
}


def run(rounds: int, steps: int, warmup: int, batch_size: int) -> dict[str, list[float]]:
    """ms per step of every variant in every round; the order rotates each round so no variant always goes first."""
    if steps - 1 - warmup < 1:
        raise ValueError(f"steps={steps} must exceed warmup + 1 = {warmup + 1}: raise --steps or lower --warmup.")
    names = list(VARIANTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(VARIANTS[name](steps, warmup, batch_size, tmp))
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (one epoch)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps at the start of each run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available" banner per run

    times = run(args.rounds, args.steps, args.warmup, args.batch_size)
    med = {name: statistics.median(values) for name, values in times.items()}
    a, b, c = (med[name] for name in VARIANTS)
    print(
        f"# CPU, torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, "
        f"{args.rounds} rounds x {args.steps - 1 - args.warmup} timed steps; medians over rounds"
    )
    print("| loop | ms/step (median) | all rounds |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {med[name]:.3f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(
        f"C - B (DistillationModule over a bare LightningModule): {c - b:+.3f} ms/step, C/B = {c / b:.2f}x "
        f"(target <= 0.5 ms)"
    )
    print(f"B - A (bare LightningModule over a plain loop):        {b - a:+.3f} ms/step, B/A = {b / a:.2f}x")
    return {"A": a, "B": b, "C": c, "C-B": c - b, "B-A": b - a}


if __name__ == "__main__":
    main()
