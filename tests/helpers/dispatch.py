"""Counting the ATen operators a piece of code dispatches (the per-operator cost model of docs/performance.md)."""

from __future__ import annotations

import collections

from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Records, in order, the ATen operators dispatched inside ``with OpCounter():`` while ``on`` is set.

    Example::

        >>> import torch
        >>> x = torch.ones(3)
        >>> with OpCounter() as counter:
        ...     _ = (x * 2).sum()
        >>> counter.ops
        ['mul', 'sum']
    """

    def __init__(self, on: bool = True) -> None:
        super().__init__()
        self.on = on
        self.ops: list[str] = []

    @property
    def counts(self) -> collections.Counter[str]:
        """How many times each operator was dispatched."""
        return collections.Counter(self.ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.on:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
