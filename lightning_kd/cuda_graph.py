"""A whole training step (forward, backward, optimizer step) captured as one CUDA graph and replayed.

At CIFAR sizes a distillation step is bound by the CPU: a few hundred kernel launches and the framework's
per-step Python. Capturing the whole step once and replaying it makes each step one launch (measured: 3 to 6
times the throughput of the eager step on an H100, docs/performance.md). What a captured step bakes in must be
handled, or training is silently wrong; :class:`WholeStepGraph` handles it as follows.

- **Hyperparameters** (learning rate, momentum, ...) are Python numbers in the optimizer's ``param_groups``,
  baked into the captured kernels. :meth:`WholeStepGraph.run` compares a Python-side copy of them at every call
  (no device sync) and re-captures when one changed.
- **Epoch-dependent values** of the loss (DKD's warm-up factor, CTKD's lambda) are Python numbers the step
  function reads: the owner calls :meth:`WholeStepGraph.invalidate` at every epoch start, so the next call
  re-captures with the new values.
- **BatchNorm statistics** are updated in place by the student's forward, inside the graph: replays keep
  updating them. (A BatchNorm with ``momentum=None`` computes its factor from ``num_batches_tracked`` on the
  host and would bake it in; the CIFAR models use the default momentum 0.1.)
- **Random numbers** (dropout) come from PyTorch's graph-safe CUDA generator: each replay draws new ones.
- **Outputs** (loss terms, counts) are static device tensors that every replay overwrites: clone what you keep
  beyond the next call.
- **Inputs** are copied into static buffers, allocated once for the shape of the first batch and reused by
  every re-capture. A batch of another shape (the last, partial batch of an epoch) runs as an ordinary eager
  step, on the same parameters, gradients and optimizer state.

Warm-up. PyTorch requires a few eager iterations on a side stream before the first capture (lazy
initialisation: cuBLAS/cuDNN handles, autograd buffers, the optimizer's state such as SGD's momentum buffers,
which must exist before capture). Here those iterations are the **real first training steps**, one per call on
that call's batch: the first ``warmup_steps`` calls run eagerly on a side stream, the next call captures and
replays. So the trajectory is exactly the eager one; no step is repeated or thrown away. Once warmed up, a
re-capture (after :meth:`invalidate` or a hyperparameter change) needs no more eager steps.

Mixed precision: bf16 autocast inside ``step_fn`` is supported (the autocast weight cache is switched off
during capture, as CUDA graphs require). fp16 with a ``GradScaler`` is not: the scaler skips steps and
changes its scale from host-side decisions that a graph cannot make.

Example::

    def step_fn(inputs, targets):
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        logits = student(inputs)
        terms = loss(logits, teacher_logits, targets)
        total = terms["ce"] + terms["kd"]
        return {"loss": total, **terms, "correct": (logits.argmax(1) == targets).sum()}

    graph = WholeStepGraph(step_fn, optimizer)
    for epoch in range(epochs):
        graph.invalidate()                      # epoch-dependent values may change
        for inputs, targets in loader:
            out = graph.run(inputs, targets)    # static tensors: clone what you keep
        scheduler.step()                        # a new lr is seen at the next run() and re-captured
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_kd._memory_format import format_for, to_memory_format

__all__ = ["CUDAGraphBackend", "GraphBackend", "WholeStepGraph", "is_supported"]

Inputs = Tensor | tuple[Tensor, ...] | list[Tensor]
StepFn = Callable[[Any, Tensor], dict[str, Tensor]]


def is_supported(device: torch.device | str) -> bool:
    """Whether a whole-step CUDA graph can run on ``device`` (a CUDA device, with CUDA available)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


class GraphBackend(ABC):
    """One captured graph: record a function once, replay it many times.

    :class:`CUDAGraphBackend` is the real one; tests inject a backend that runs the function eagerly, so the
    capture / re-capture logic of :class:`WholeStepGraph` is exercised without a GPU.
    """

    @abstractmethod
    def capture(self, fn: Callable[[], None]) -> None:
        """Record ``fn``'s device work. A real capture does not execute it; the first replay does."""

    @abstractmethod
    def replay(self) -> None:
        """Run the recorded work again, on the same memory."""


class CUDAGraphBackend(GraphBackend):
    """A :class:`torch.cuda.CUDAGraph` captured on the current device through :class:`torch.cuda.graph`."""

    def __init__(self) -> None:
        self._graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[], None]) -> None:
        # the autocast weight cache would keep casts made outside the capture (or free ones made inside it)
        cache_enabled = torch.is_autocast_cache_enabled()
        torch.clear_autocast_cache()
        torch.set_autocast_cache_enabled(False)
        try:
            # thread_local: other threads (a DataLoader's pin-memory thread) may call CUDA during the capture
            with torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
                fn()
        finally:
            torch.set_autocast_cache_enabled(cache_enabled)

    def replay(self) -> None:
        self._graph.replay()


class WholeStepGraph:
    """Run training steps as replays of one captured CUDA graph: forward, backward and optimizer step.

    Args:
        step_fn: ``step_fn(inputs, targets) -> dict[str, Tensor]``: the forward part of one training step
            (teacher forward under ``no_grad``, student forward, loss). It must return the scalar training loss
            under the key ``"loss"``; every other entry (loss terms, counts of correct predictions) is returned
            by :meth:`run` too. It must not synchronise with the host (no ``.item()``, no value-dependent
            Python branches) and must read everything that changes between steps from its arguments or from
            device tensors updated in place.
        optimizer: the optimizer to step after the backward pass (a raw :class:`torch.optim.Optimizer`;
            Lightning's ``LightningOptimizer`` wrapper is unwrapped). Parameter groups with a ``capturable``
            flag (Adam, AdamW, ...) are switched to ``capturable=True`` and existing step counters moved to
            the parameters' device. SGD has no such flag; its learning rate is baked in, hence the
            re-capture when it changes.
        scaler: the precision plugin's ``GradScaler``, if any. An enabled scaler (fp16 mixed precision) is
            rejected: use bf16-mixed or 32-true.
        warmup_steps: eager steps (on a side stream) before the first capture; they are the first real
            training steps, see the module docstring. PyTorch's documentation uses 3.
        channels_last: keep 4-D inputs in ``torch.channels_last`` memory format (convert the networks with
            ``net.to(memory_format=torch.channels_last)`` too, so convolutions use NHWC kernels).
        graph_factory: builds one :class:`GraphBackend` per capture; default :class:`CUDAGraphBackend`,
            which needs CUDA inputs (see :func:`is_supported`).

    Raises:
        ValueError: for an enabled ``scaler`` or a negative ``warmup_steps``.
        TypeError: when ``optimizer`` is not a :class:`torch.optim.Optimizer`.
    """

    def __init__(
        self,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        *,
        warmup_steps: int = 3,
        channels_last: bool = False,
        graph_factory: Callable[[], GraphBackend] | None = None,
    ) -> None:
        if scaler is not None and scaler.is_enabled():
            raise ValueError(
                "A CUDA-graphed training step does not support fp16 mixed precision with a GradScaler (it skips "
                "steps and rescales from host-side decisions): use precision 'bf16-mixed' or '32-true', or turn "
                "cuda_graph off."
            )
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}.")
        optimizer = _unwrap(optimizer)
        _make_capturable(optimizer)
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._graph_factory = graph_factory
        self._graph: GraphBackend | None = None
        self._warmups_left = warmup_steps
        self._hyper: tuple[Any, ...] | None = None
        self._signature: tuple[Any, ...] | None = None
        self._static_inputs: Inputs | None = None
        self._static_targets: Tensor | None = None
        self._static_out: dict[str, Tensor] = {}
        self._side_stream: torch.cuda.Stream | None = None
        self.captures = 0
        """How many times a graph was captured (for logs and tests)."""
        self.eager_steps = 0
        """How many steps ran eagerly: warm-up steps and batches of another shape."""
        self.capture_seconds = 0.0
        """Host time spent capturing, in total (a capture synchronises the device and records the step)."""

    @property
    def captured(self) -> bool:
        """Whether a graph is ready to replay (no re-capture pending)."""
        return self._graph is not None

    def invalidate(self) -> None:
        """Drop the captured graph: the next :meth:`run` re-captures (call it at every epoch start).

        The static input buffers are kept and reused by the next capture.
        """
        self._graph = None

    def run(self, inputs: Inputs, targets: Tensor) -> dict[str, Tensor]:
        """One training step on ``(inputs, targets)``: warm-up, capture, replay or eager, as due.

        Args:
            inputs: a batch of inputs, or a tuple of views (multi-view losses), on the training device.
            targets: ``(B,)`` class indices on the same device.

        Returns:
            ``step_fn``'s outputs, detached. After a replay they are the graph's static tensors, overwritten by
            the next call: clone what you keep.

        Raises:
            RuntimeError: when the default CUDA backend is used with inputs that are not on a CUDA device.
        """
        signature = _signature(inputs, targets)
        if self._graph_factory is None and not is_supported(targets.device):
            raise RuntimeError(
                f"WholeStepGraph needs CUDA tensors (got a batch on {targets.device}); check is_supported(device) "
                "before building it and use an eager step elsewhere."
            )
        if self._signature is None:
            self._signature = signature  # the first batch fixes the graphed shape (a full batch)
        hyper = _hyperparameters(self.optimizer)
        if self._graph is not None and hyper != self._hyper:
            self._graph = None  # lr (or another hyperparameter) changed: it is baked into the graph
        if self._warmups_left > 0:
            self._warmups_left -= 1
            return self._eager_step(inputs, targets, side_stream=True)
        if signature != self._signature:
            return self._eager_step(inputs, targets, side_stream=False)  # e.g. the last, partial batch
        if self._graph is None:
            self._capture(inputs, targets)
            self._hyper = hyper
        else:
            self._copy_in(inputs, targets)
        self._graph.replay()
        return self._static_out

    def _eager_step(self, inputs: Inputs, targets: Tensor, *, side_stream: bool) -> dict[str, Tensor]:
        self.eager_steps += 1
        inputs = to_memory_format(inputs, self.memory_format)
        with self._on_side_stream(side_stream, targets.device):
            # keep the gradients that a captured graph writes as param.grad (zeroed in place, not replaced)
            self.optimizer.zero_grad(set_to_none=self._graph is None)
            out = self.step_fn(inputs, targets)
            _loss(out).backward()
            self.optimizer.step()
            return {name: value.detach() for name, value in out.items()}

    def _capture(self, inputs: Inputs, targets: Tensor) -> None:
        start = time.perf_counter()
        if self._static_inputs is None:
            self._static_inputs = _map(
                inputs, lambda x: torch.empty_like(x, memory_format=format_for(x, self.memory_format))
            )
            self._static_targets = torch.empty_like(targets)
        self._copy_in(inputs, targets)
        self._static_out = {}  # free the previous graph's outputs before its memory pool goes
        self._graph = None
        # gradients allocated inside the capture belong to the graph's memory pool; each replay rewrites them
        self.optimizer.zero_grad(set_to_none=True)
        graph = self._graph_factory() if self._graph_factory is not None else CUDAGraphBackend()

        def whole_step() -> None:
            out = self.step_fn(self._static_inputs, self._static_targets)
            _loss(out).backward()
            self.optimizer.step()
            self._static_out = {name: value.detach() for name, value in out.items()}

        graph.capture(whole_step)
        self._graph = graph
        self.captures += 1
        self.capture_seconds += time.perf_counter() - start

    def _copy_in(self, inputs: Inputs, targets: Tensor) -> None:
        for static, value in zip(_tensors(self._static_inputs), _tensors(inputs), strict=True):
            static.copy_(value, non_blocking=True)
        self._static_targets.copy_(targets, non_blocking=True)

    @contextlib.contextmanager
    def _on_side_stream(self, wanted: bool, device: torch.device) -> Iterator[None]:
        """Run warm-up work on a side stream, as PyTorch requires before a capture (a no-op off CUDA)."""
        if not (wanted and device.type == "cuda"):
            yield
            return
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device=device)
        current = torch.cuda.current_stream(device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream):
            yield
        current.wait_stream(self._side_stream)


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    # Lightning's LightningOptimizer wraps the real one (public property `.optimizer`); its step() adds
    # precision-plugin and closure logic that must not be captured.
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    return optimizer


def _make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Switch groups with a ``capturable`` flag on; their step counters must then live on the device."""
    for group in optimizer.param_groups:
        if "capturable" not in group or group["capturable"]:
            continue
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, Tensor) and step.device != param.device:
                state["step"] = step.to(param.device, dtype=torch.float32)


def _hyperparameters(optimizer: torch.optim.Optimizer) -> tuple[Any, ...]:
    """A host-side snapshot of every group's settings (tensors by identity: reading them would sync)."""
    return tuple(
        tuple(
            (key, ("tensor", id(value)) if isinstance(value, Tensor) else value)
            for key, value in group.items()
            if key != "params"
        )
        for group in optimizer.param_groups
    )


def _signature(inputs: Inputs, targets: Tensor) -> tuple[Any, ...]:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in (*_tensors(inputs), targets))


def _tensors(inputs: Inputs | None) -> Sequence[Tensor]:
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and all(isinstance(x, Tensor) for x in inputs):
        return tuple(inputs)
    raise TypeError(f"inputs must be a Tensor or a tuple of Tensors (views), got {type(inputs).__name__}.")


def _map(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    if isinstance(inputs, Tensor):
        return fn(inputs)
    return type(inputs)(fn(x) for x in _tensors(inputs))


def _loss(out: dict[str, Tensor]) -> Tensor:
    if "loss" not in out:
        raise KeyError(f"step_fn must return the training loss under the key 'loss'; it returned {sorted(out)}.")
    return out["loss"]
