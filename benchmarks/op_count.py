"""Operators dispatched per training step: the reference loop against ``DistillationModule``, on the CPU.

At CIFAR sizes a GPU training step is bound by per-operator costs (framework dispatch and kernel launch), not by
arithmetic (docs/performance.md). Each ATen operator a step dispatches is one such cost, so the count per step is
a machine-independent proxy for the eager step's CPU cost on a GPU, and it can be measured here without one.

In one process, resnet32x4 (frozen) -> resnet8x4, KD + LS (T 2, CE 0.1, KD 9), SGD, on random batches:

1. ``reference``: the plain loop (teacher forward under ``no_grad``, student forward, loss, ``zero_grad``,
   backward, SGD step);
2. ``module``: ``DistillationModule`` under ``Trainer.fit`` (everything between ``on_train_batch_start`` and
   ``on_train_batch_end`` of a step that does not log);
3. ``module_folded``: the same with ``fold_teacher_bn=True`` (as the shipped presets set it);
4. ``fast_outside_graph``: the fast preset's path (``cuda_graph``, ``channels_last``, folded teacher,
   ``CIFAR100DataModule(device_augment=True)`` on random-pixel files in the on-disk format): the operators that run
   eagerly around the graph replay, from the end of one step to the end of the next (batch fetch, device
   augmentation, copies into the graph's buffers, running sums). A CPU has no CUDA graph, so the module's graph
   gets a backend that runs the captured step at each replay with the counter paused (the test suite's way of
   running the graphed path on a CPU). On a GPU the batch's transfer adds 2 copies.

Operators are counted with a ``TorchDispatchMode``; the counts do not depend on the batch size. Also times the
teacher's forward alone, plain against folded, interleaved (``--rounds`` rounds, medians), one thread.

    python benchmarks/op_count.py
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lightning_kd.step_runners as runners  # noqa: E402
from benchmarks.reference_step import reference_step  # noqa: E402
from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.cuda_graph import GraphBackend, WholeStepGraph  # noqa: E402
from lightning_kd.data import CIFAR100DataModule  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from lightning_kd.models.fold import fold_batchnorm  # noqa: E402
from tests.helpers.dispatch import OpCounter  # noqa: E402
from tests.helpers.fake_data import write_fake_cifar100  # noqa: E402


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
    counter = OpCounter(on=False)
    with counter:
        for step, (inputs, targets) in enumerate(_batches(counted_step + 2, batch_size)):
            counter.on = step == counted_step
            reference_step(student, teacher, loss, optimizer, inputs, targets)
            counter.on = False
    return counter.counts


class _Window(Callback):
    def __init__(self, counter: OpCounter, counted_step: int) -> None:
        self.counter, self.counted_step = counter, counted_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.counter.on = batch_idx == self.counted_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counter.on = False


def module_ops(counted_step: int, batch_size: int, *, fold: bool) -> collections.Counter[str]:
    student, teacher = _networks()
    module = DistillationModule(student, teacher, _loss(), optimizer=_sgd, lr_scheduler=None, fold_teacher_bn=fold)
    counter = OpCounter(on=False)
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
    return counter.counts


class _CountingPausedBackend(GraphBackend):
    """Stands in for a CUDA graph on the CPU: a replay runs the captured step with the counter paused."""

    def __init__(self, optimizer: torch.optim.Optimizer, counter: OpCounter) -> None:
        self.optimizer, self.counter = optimizer, counter

    def capture(self, fn) -> None:
        self.fn = fn

    def replay(self) -> None:
        was_on, self.counter.on = self.counter.on, False
        self.optimizer.zero_grad(set_to_none=True)  # a replay rewrites the gradients the capture allocated
        self.fn()
        self.counter.on = was_on


class _BetweenStepEnds(Callback):
    def __init__(self, counter: OpCounter, counted_step: int) -> None:
        self.counter, self.counted_step = counter, counted_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counter.on = batch_idx + 1 == self.counted_step  # from here to the end of the counted step


def fast_outside_graph_ops(counted_step: int, batch_size: int) -> collections.Counter[str]:
    counter = OpCounter(on=False)

    def graph(*args, **kwargs) -> WholeStepGraph:
        optimizer = args[1]
        return WholeStepGraph(*args, graph_factory=lambda: _CountingPausedBackend(optimizer, counter), **kwargs)

    student, teacher = _networks()
    module = DistillationModule(
        student,
        teacher,
        _loss(),
        optimizer=_sgd,
        lr_scheduler=None,
        cuda_graph=True,
        channels_last=True,
        fold_teacher_bn=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_cifar100(tmp, n_train=(counted_step + 2) * batch_size, n_test=batch_size)
        data = CIFAR100DataModule(
            tmp, batch_size=batch_size, verify_checksums=False, device_augment=True, num_workers=0
        )
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=50,
            callbacks=[_BetweenStepEnds(counter, counted_step)],
        )
        # the module runs its graphed step only where a CUDA graph is supported: stand one in (see above)
        with (
            mock.patch.object(runners, "is_supported", return_value=True),
            mock.patch.object(runners, "WholeStepGraph", graph),
            counter,
        ):
            trainer.fit(module, datamodule=data)
    graph = getattr(module.step_runner, "graph", None)
    if graph is None or graph.captures != 1:
        raise RuntimeError("the graphed path did not run: nothing outside a graph was counted")
    return counter.counts


def teacher_forward_ms(rounds: int, batch_size: int) -> tuple[float, float]:
    _, teacher = _networks()
    teacher.eval()
    folded = fold_batchnorm(teacher)
    x = torch.randn(batch_size, 3, 32, 32)
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: less noise; restored, as a caller (the test suite) keeps running
    try:
        with torch.no_grad():
            teacher(x), folded(x)  # warm-up
            for _ in range(rounds):
                for name, net in (("plain", teacher), ("folded", folded)):
                    start = time.perf_counter()
                    net(x)
                    times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times["plain"]), statistics.median(times["folded"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8, help="the counts do not depend on it")
    parser.add_argument("--counted-step", type=int, default=3, help="which step is counted (after warm-up steps)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the teacher-forward timing")
    args = parser.parse_args(argv)

    counts = {
        "reference": reference_ops(args.counted_step, args.batch_size),
        "module": module_ops(args.counted_step, args.batch_size, fold=False),
        "module_folded": module_ops(args.counted_step, args.batch_size, fold=True),
    }
    outside = fast_outside_graph_ops(max(args.counted_step, 5), args.batch_size)  # after 3 warm-ups and the capture
    totals = {name: sum(ops.values()) for name, ops in counts.items()}
    print(f"ATen operators per training step (resnet32x4 -> resnet8x4, KD+LS, SGD; batch {args.batch_size}, CPU):")
    print("| loop | ops per step | x reference |")
    print("|---|---|---|")
    for name, total in totals.items():
        print(f"| {name} | {total} | {total / totals['reference']:.3f} |")
    extra = collections.Counter(counts["module"])
    extra.subtract(counts["reference"])
    print("module - reference, by operator:", dict(sorted((k, v) for k, v in extra.items() if v)))
    print(
        f"fast path, operators outside the graph per step: {sum(outside.values())} "
        f"(+2 host-to-device copies on a GPU): {dict(sorted(outside.items()))}"
    )
    plain_ms, folded_ms = teacher_forward_ms(args.rounds, args.batch_size)
    print(
        f"teacher forward (batch {args.batch_size}, 1 thread, median of {args.rounds}): plain {plain_ms:.2f} ms, "
        f"folded {folded_ms:.2f} ms, folded / plain {folded_ms / plain_ms:.3f}"
    )
    return {
        **{f"ops_{k}": float(v) for k, v in totals.items()},
        "ops_fast_outside_graph": float(sum(outside.values())),
        "teacher_plain_ms": plain_ms,
        "teacher_folded_ms": folded_ms,
    }


if __name__ == "__main__":
    main()
