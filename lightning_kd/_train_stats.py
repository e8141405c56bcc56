"""Device-side running sums of the training loss terms and accuracy: a training step adds, never syncs.

Logging each term with ``self.log(..., on_step=True, on_epoch=True)`` costs about 1 ms per call on a CPU and a
torchmetrics update validates its inputs with ``torch.unique`` (a host sync on an accelerator). Here a step adds one
small vector ``[loss*n, term_1*n, ..., correct, n]`` to a running sum on the device. The host reads it only when a
window of ``log_every_n_steps`` steps closes (step values, which are the window's means) and at the end of the
epoch (exact epoch means), and checks there that no term became non-finite.

A step costs two operators, ``stack`` and an in-place ``addcmul_`` with a cached weight vector ``[n, ..., n, 1, n]``:
at CIFAR sizes a GPU step is bound by per-operator costs (``benchmarks/op_count.py``), and under ``cuda_graph`` these
run eagerly outside the graph at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class TrainStepStats:
    """Running sums of named training terms over an epoch, read window by window.

    Example::

        >>> stats = TrainStepStats()
        >>> stats.add(torch.tensor(2.0), {"ce": torch.tensor(2.0)}, torch.tensor(3), batch_size=4)
        >>> stats.add(torch.tensor(4.0), {"ce": torch.tensor(4.0)}, torch.tensor(1), batch_size=4)
        >>> means, accuracy = stats.window_means()
        >>> means["loss"].item(), accuracy.item()
        (3.0, 0.5)
    """

    def __init__(self) -> None:
        self.names: tuple[str, ...] | None = None
        self._epoch: Tensor | None = None  # [loss*n, term*n..., correct, n], summed over the epoch
        self._read: Tensor | None = None  # the epoch sums at the last window close
        self.window_start_step = 0
        # per (batch size, vector length, device): the weights [n, ..., n, 1, n] and the 1 stacked as the count's value
        self._weights: dict[tuple[int, int, torch.device], tuple[Tensor, Tensor]] = {}

    def reset(self, step: int = 0) -> None:
        """Start a new epoch (its first step is the global step ``step``)."""
        self._epoch = self._read = None
        self.window_start_step = step

    @property
    def empty(self) -> bool:
        """No step was added since the epoch started."""
        return self._epoch is None

    def add(self, loss: Tensor, terms: dict[str, Tensor], correct: Tensor, batch_size: int) -> None:
        """Add one step: the loss, its terms (already weighted) and the number of correct top-1 predictions.

        Raises:
            ValueError: the terms' names differ from those of the epoch's first step.
        """
        names = ("loss", *terms)
        if self.names is None:
            self.names = names
        elif names != self.names:
            raise ValueError(
                f"The loss returned the terms {names[1:]} after {self.names[1:]}: a loss must return the same named "
                "terms at every step (use a zero tensor for a term that is off)."
            )
        if correct.dtype != loss.dtype:
            correct = correct.to(loss.dtype)  # the module hands a float count: no conversion per step
        key = (batch_size, len(names) + 2, loss.device)
        if key not in self._weights:
            weights = torch.full(key[1:2], float(batch_size), device=loss.device)
            weights[-2] = 1.0  # the correct count is a sum already
            self._weights[key] = (weights, torch.ones((), device=loss.device))
        weights, one = self._weights[key]
        with torch.no_grad():  # no autograd graph, so no detach per tensor
            values = torch.stack([loss, *terms.values(), correct, one])  # [loss, terms..., correct, 1]
            if self._epoch is None:
                self._epoch = torch.zeros_like(values, dtype=torch.float32)
            self._epoch.addcmul_(values, weights)

    def _means(self, sums: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        assert self.names is not None
        count = sums[-1].clamp_min(1.0)
        means = sums[:-2] / count
        return dict(zip(self.names, means, strict=True)), sums[-2] / count

    def window_means(
        self, check_finite: bool = True, epoch: int = 0, step: int = 0
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Close the current window: means of each term and the top-1 accuracy over the steps since the last one.

        Args:
            check_finite: check (one host sync) that every term stayed finite in the window.
            epoch: the epoch (from 1) and ``step`` the global step that closes the window, for the error message.

        Raises:
            FloatingPointError: a term was NaN or infinite in a step of the window; the message names the epoch,
                the span of steps and the terms.
        """
        assert self._epoch is not None, "no step was added"
        window = self._epoch.clone() if self._read is None else self._epoch - self._read
        self._read = self._epoch.clone()  # the running sum is updated in place
        start, self.window_start_step = self.window_start_step, step + 1
        if check_finite:
            finite = torch.isfinite(window[:-2])
            if not bool(finite.all()):  # the one host sync, once per window
                assert self.names is not None
                bad = [name for name, ok in zip(self.names, finite.tolist(), strict=True) if not ok]
                raise FloatingPointError(
                    f"Non-finite training loss in epoch {epoch}, global steps {start}..{step}: terms {bad} are NaN or "
                    "infinite. Training stopped so no checkpoint is written from these weights; lower the learning "
                    "rate, check the inputs and labels, or use 32-bit precision, then resume from the last checkpoint."
                )
        return self._means(window)

    def epoch_sums(self) -> Tensor:
        """The epoch's sums ``[loss*n, term*n..., correct, n]`` (reduce them across processes before :meth:`means`)."""
        assert self._epoch is not None, "no step was added"
        return self._epoch.clone()  # a collective may reduce it in place; the running sum stays this process's

    def means(self, sums: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Means of each term and the accuracy from (reduced) epoch sums."""
        return self._means(sums)
