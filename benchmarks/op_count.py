"""Operators dispatched per training step: the reference loop against ``DistillationModule``, on the CPU.

At CIFAR sizes a GPU training step is bound by per-operator costs (framework dispatch and kernel launch), not by
arithmetic (docs/performance.md). Each ATen operator a step dispatches is one such cost, so the count per step is
a machine-independent proxy for the eager step's CPU cost on a GPU, and it can be measured here without one.

In one process, resnet32x4 (frozen) -> resnet8x4, KD + LS (T 2, CE 0.1, KD 9), SGD, on random batches:

1. ``reference``: the plain loop (teacher forward under ``no_grad``, student forward, loss, ``zero_grad``,
   backward, SGD step);
2. ``module``: ``DistillationModule`` under ``Trainer.fit`` (everything between ``on_train_batch_start`` and
   ``on_train_batch_end`` of a step that does not log);
3. ``module_folded``: the same with ``fold_teacher_bn=True`` (as the shipped presets set it).

Operators are counted with a ``TorchDispatchMode``; the counts do not depend on the batch size. Also times the
teacher's forward alone, plain against folded, interleaved (``--rounds`` rounds, medians), one thread.

    python benchmarks/op_count.py
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.reference_step import reference_step  # noqa: E402
from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from lightning_kd.models.fold import fold_batchnorm  # noqa: E402


class _Counter(TorchDispatchMode):
    """Counts the ATen operators dispatched while ``on`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _loss() -> KD:
    return KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return create_model("resnet8x4", num_classes=100), create_model("resnet32x4", num_classes=100)


def _batches(n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, 3, 32, 32, generator=g), torch.randint(0, 100, (batch_size,), generator=g))
        for _ in range(n)
    ]


def reference_ops(counted_step: int, batch_size: int) -> collections.Counter[str]:
    student, teacher = _networks()
    teacher.eval().requires_grad_(False)
    loss, optimizer = _loss(), _sgd(student.parameters())
    counter = _Counter()
    with counter:
        for step, (inputs, targets) in enumerate(_batches(counted_step + 2, batch_size)):
            counter.on = step == counted_step
            reference_step(student, teacher, loss, optimizer, inputs, targets)
            counter.on = False
    return counter.ops


class _Window(Callback):
    def __init__(self, counter: _Counter, counted_step: int) -> None:
        self.counter, self.counted_step = counter, counted_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.counter.on = batch_idx == self.counted_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counter.on = False


def module_ops(counted_step: int, batch_size: int, *, fold: bool) -> collections.Counter[str]:
    student, teacher = _networks()
    module = DistillationModule(student, teacher, _loss(), optimizer=_sgd, lr_scheduler=None, fold_teacher_bn=fold)
    counter = _Counter()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,  # the counted step does not close a logging window
        callbacks=[_Window(counter, counted_step)],
    )
    with counter:
        trainer.fit(module, train_dataloaders=DataLoader(_batches(counted_step + 2, batch_size), batch_size=None))
    return counter.ops


def teacher_forward_ms(rounds: int, batch_size: int) -> tuple[float, float]:
    _, teacher = _networks()
    teacher.eval()
    folded = fold_batchnorm(teacher)
    x = torch.randn(batch_size, 3, 32, 32)
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    with torch.no_grad():
        teacher(x), folded(x)  # warm-up
        for _ in range(rounds):
            for name, net in (("plain", teacher), ("folded", folded)):
                start = time.perf_counter()
                net(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times["plain"]), statistics.median(times["folded"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8, help="the counts do not depend on it")
    parser.add_argument("--counted-step", type=int, default=3, help="which step is counted (after warm-up steps)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the teacher-forward timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    counts = {
        "reference": reference_ops(args.counted_step, args.batch_size),
        "module": module_ops(args.counted_step, args.batch_size, fold=False),
        "module_folded": module_ops(args.counted_step, args.batch_size, fold=True),
    }
    totals = {name: sum(ops.values()) for name, ops in counts.items()}
    print(f"ATen operators per training step (resnet32x4 -> resnet8x4, KD+LS, SGD; batch {args.batch_size}, CPU):")
    print("| loop | ops per step | x reference |")
    print("|---|---|---|")
    for name, total in totals.items():
        print(f"| {name} | {total} | {total / totals['reference']:.3f} |")
    extra = collections.Counter(counts["module"])
    extra.subtract(counts["reference"])
    print("module - reference, by operator:", dict(sorted((k, v) for k, v in extra.items() if v)))
    plain_ms, folded_ms = teacher_forward_ms(args.rounds, args.batch_size)
    print(
        f"teacher forward (batch {args.batch_size}, 1 thread, median of {args.rounds}): plain {plain_ms:.2f} ms, "
        f"folded {folded_ms:.2f} ms, folded / plain {folded_ms / plain_ms:.3f}"
    )
    return {
        **{f"ops_{k}": float(v) for k, v in totals.items()},
        "teacher_plain_ms": plain_ms,
        "teacher_folded_ms": folded_ms,
    }


if __name__ == "__main__":
    main()
