"""How a training step is executed: one :class:`StepRunner` per way (eager, one CUDA-graph replay).

The module hands the runner its step (``step(inputs, targets, extras) -> (logits, terms)``: forward passes and the
named, weighted loss terms; ``extras`` are further batch tensors the step reads, e.g. a teacher cache's view keys)
and gets back a :class:`StepResult`: the training loss, the terms and the number of correct top-1 predictions, all
device tensors. The module records them (running sums, logging) the same way whichever runner
ran the step, so ``training_step``, ``configure_optimizers`` and the epoch hooks hold no branch on the way of
execution. The runner also owns the memory format of inputs and networks (``channels_last``).

A new way of executing a step is one new :class:`StepRunner` subclass and its case in :func:`select_step_runner`.
"""

from __future__ import annotations

import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_kd._graphed import ReplayingOptimizer
from lightning_kd._memory_format import to_memory_format
from lightning_kd.cuda_graph import WholeStepGraph, is_supported

__all__ = ["CUDAGraphRunner", "EagerRunner", "StepResult", "StepRunner", "select_step_runner"]

Step = Callable[[Any, Tensor, tuple[Tensor, ...]], tuple[Tensor, dict[str, Tensor]]]
_TERM = "term/"


@dataclass(frozen=True)
class StepResult:
    """One training step's outputs, as device tensors (no host sync).

    Attributes:
        loss: the training loss (the sum of the terms).
        terms: the named, weighted loss terms.
        correct: the number of correct top-1 predictions of the batch, a float32 scalar.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    correct: Tensor


def sum_terms(terms: dict[str, Tensor]) -> Tensor:
    """The training loss: the sum of the already-weighted loss terms (``len(terms) - 1`` additions, no stack)."""
    return functools.reduce(operator.add, terms.values())


def count_correct(logits: Tensor, targets: Tensor) -> Tensor:
    """Number of correct top-1 predictions, as a float32 scalar on the device (three operators, no sync)."""
    with torch.no_grad():
        return (logits.argmax(dim=-1) == targets).sum(dtype=torch.float32)


class StepRunner(ABC):
    """Executes training steps for a module.

    Args:
        channels_last: keep networks and 4-D inputs in ``torch.channels_last`` memory format.
    """

    #: whether :meth:`run` includes the optimizer's update (the module then uses Lightning's manual optimization,
    #: and Lightning has counted the step when :meth:`run` returns)
    steps_optimizer: ClassVar[bool] = False

    def __init__(self, channels_last: bool = False) -> None:
        self.channels_last = bool(channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def format_inputs(self, inputs: Any) -> Any:
        """The batch's inputs in the runner's memory format (the only conversion of inputs in the package)."""
        return to_memory_format(inputs, self.memory_format) if self.channels_last else inputs

    def prepare_networks(self, networks: Iterable[nn.Module]) -> None:
        """Put the networks in the runner's memory format (once, at setup)."""
        if self.channels_last:
            for net in networks:
                net.to(memory_format=torch.channels_last)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer Lightning should hold (the given one by default)."""
        return optimizer

    @abstractmethod
    def run(
        self, module: LightningModule, step: Step, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> StepResult:
        """Execute one training step on ``(inputs, targets)`` (and the batch's ``extras``)."""

    def on_train_epoch_start(self, epoch_dependent: bool) -> None:
        """An epoch starts; ``epoch_dependent`` tells whether the step's math changes with the epoch."""
        del epoch_dependent  # an eager step reads every value afresh

    def on_train_epoch_end(self, module: LightningModule) -> None:
        """An epoch ended (a runner that steps the optimizer itself steps epoch-interval schedulers here)."""
        del module  # Lightning steps the schedulers of automatic optimization

    def invalidate(self) -> None:
        """Something the step reads was replaced (a new folded teacher): drop what was captured from it."""
        return  # nothing captured by default


class EagerRunner(StepRunner):
    """The step as written: forward, loss; Lightning runs backward and the optimizer's update."""

    def run(
        self, module: LightningModule, step: Step, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> StepResult:
        logits, terms = step(self.format_inputs(inputs), targets, extras)
        return StepResult(sum_terms(terms), terms, count_correct(logits, targets))


class CUDAGraphRunner(StepRunner):
    """The whole step (forward, backward, optimizer update) as one replay of a captured CUDA graph.

    See :mod:`lightning_kd.cuda_graph` for what a capture bakes in and how it is kept right; see
    :mod:`lightning_kd._graphed` for how Lightning still counts each step. The graph is built at the first step.
    """

    steps_optimizer = True

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__(channels_last)
        self.graph: WholeStepGraph | None = None

    @staticmethod
    def check(trainer: Trainer) -> None:
        """Refuse settings a captured step cannot honour.

        Raises:
            ValueError: several processes, gradient accumulation or gradient clipping.
        """
        if trainer.world_size > 1:
            raise ValueError(
                f"cuda_graph=True runs on one device; this run has {trainer.world_size} processes. Turn "
                "cuda_graph off for multi-device runs (the collectives of DDP/FSDP are not captured)."
            )
        if trainer.accumulate_grad_batches != 1 or trainer.gradient_clip_val:
            raise ValueError(
                "cuda_graph=True captures one optimizer update per batch: it does not combine with "
                f"accumulate_grad_batches={trainer.accumulate_grad_batches} or "
                f"gradient_clip_val={trainer.gradient_clip_val}. Turn cuda_graph off or drop those settings."
            )

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        # the graph holds the optimizer's update; Lightning counts it through ReplayingOptimizer.step
        return ReplayingOptimizer(optimizer)

    def run(
        self, module: LightningModule, step: Step, inputs: Any, targets: Tensor, extras: tuple[Tensor, ...] = ()
    ) -> StepResult:
        optimizer = module.optimizers()
        if self.graph is None:
            scaler = getattr(module.trainer.precision_plugin, "scaler", None)
            replaying = optimizer.optimizer  # LightningOptimizer -> ReplayingOptimizer -> the real one, graphed
            real = replaying.optimizer if isinstance(replaying, ReplayingOptimizer) else replaying
            layout = _Layout(isinstance(inputs, Tensor), 1 if isinstance(inputs, Tensor) else len(inputs))
            self.graph = WholeStepGraph(_packed(step, layout), real, scaler, channels_last=self.channels_last)
        out: dict[str, Tensor] = {}
        # the extras travel with the inputs as one flat tuple, so the graph copies them into static buffers too;
        # the graph's static input buffers are in the runner's memory format: copying into them converts the
        # layout, so a separate conversion here would be one more full copy per step
        flat = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        graph_inputs = inputs if not extras else (*flat, *extras)
        optimizer.step(closure=lambda: out.update(self.graph.run(graph_inputs, targets)))
        terms = {k.removeprefix(_TERM): v for k, v in out.items() if k.startswith(_TERM)}
        return StepResult(out["loss"], terms, out["correct"])

    def on_train_epoch_start(self, epoch_dependent: bool) -> None:
        if epoch_dependent:
            self.invalidate()  # epoch-dependent values of the loss (warm-ups, schedules) are baked in

    def on_train_epoch_end(self, module: LightningModule) -> None:
        # manual optimization: epoch-interval schedulers are stepped here
        schedulers = module.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    def invalidate(self) -> None:
        if self.graph is not None:
            self.graph.invalidate()


@dataclass(frozen=True)
class _Layout:
    """How a batch's inputs were given: one tensor, or a tuple of ``views`` tensors (fixed for a fit)."""

    single: bool
    views: int

    def split(self, graph_inputs: Any) -> tuple[Any, tuple[Tensor, ...]]:
        """The step's ``(inputs, extras)`` from what the graph was given (the inputs, then the extras, flat)."""
        if isinstance(graph_inputs, Tensor):
            return graph_inputs, ()
        flat = tuple(graph_inputs)
        inputs = flat[0] if self.single else flat[: self.views]
        return inputs, flat[self.views :]


def _packed(step: Step, layout: _Layout) -> Callable[[Any, Tensor], dict[str, Tensor]]:
    """``step`` as :class:`WholeStepGraph` wants it: one flat dict with the loss, the correct count and the terms."""

    def step_fn(graph_inputs: Any, targets: Tensor) -> dict[str, Tensor]:
        inputs, extras = layout.split(graph_inputs)
        logits, terms = step(inputs, targets, extras)
        return {
            "loss": sum_terms(terms),
            "correct": count_correct(logits, targets),
            **{f"{_TERM}{k}": v for k, v in terms.items()},
        }

    return step_fn


def select_step_runner(trainer: Trainer | None, *, cuda_graph: bool, channels_last: bool) -> StepRunner:
    """The runner for a fit: one CUDA-graph replay per step where asked for and possible, else eager.

    Raises:
        ValueError: ``cuda_graph`` with settings a captured step cannot honour (see :meth:`CUDAGraphRunner.check`).
        RuntimeError: ``cuda_graph`` without a trainer (its device decides).
    """
    if cuda_graph:
        if trainer is None:
            raise RuntimeError("cuda_graph=True needs the module attached to a Trainer: its device decides the runner.")
        device = trainer.strategy.root_device
        if is_supported(device):
            CUDAGraphRunner.check(trainer)
            return CUDAGraphRunner(channels_last)
        rank_zero_info(f"cuda_graph=True has no effect on {device}: the training step runs eagerly (CUDA only).")
    return EagerRunner(channels_last)
