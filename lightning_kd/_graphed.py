"""How a module runs its training step as one CUDA-graph replay under Lightning (``cuda_graph=True``).

The step is captured by :class:`~lightning_kd.cuda_graph.WholeStepGraph` (forward, backward and the optimizer's
update in one graph). Lightning must still see an optimizer step, so that ``global_step``, ``max_steps``, the
loggers' step index and the checkpoints stay right: the module switches to manual optimization and calls
``self.optimizers().step(closure)``, where the optimizer Lightning holds is a :class:`ReplayingOptimizer`. Its
``step`` only runs the closure, which replays the graph; the real optimizer's update is inside the graph. It
shares ``param_groups`` and ``state`` with the real optimizer, so learning-rate schedulers, checkpoints and
resuming act on the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class ReplayingOptimizer(torch.optim.Optimizer):
    """Stands in for ``optimizer`` in Lightning: ``step(closure)`` runs the closure and nothing else.

    Args:
        optimizer: the real optimizer, stepped inside the captured graph (public as :attr:`optimizer`, which is
            where :class:`~lightning_kd.cuda_graph.WholeStepGraph` finds it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:  # no super().__init__: everything is shared
        self.optimizer = optimizer
        self.defaults = optimizer.defaults
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``closure`` (the graph replay, whose last part is the real optimizer's update)."""
        if closure is None:
            raise ValueError("ReplayingOptimizer.step needs the closure that replays the captured training step.")
        return closure()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The captured graph owns the gradients (rewritten by every replay); nothing to clear here."""

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def __repr__(self) -> str:
        return f"ReplayingOptimizer({self.optimizer!r})"
