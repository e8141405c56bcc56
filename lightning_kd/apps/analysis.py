"""Helpers for looking at runs: logged metrics per epoch, logits of a dataset, and the paper's logit scatter.

Used by the notebooks (``notebooks/quickstart.ipynb``, ``notebooks/inspecting_logits.ipynb``). Plotting needs
matplotlib (the ``dev`` extra); it is imported only by the plotting functions.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_kd.callbacks.logit_statistics import per_sample_stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "collect_logits",
    "epoch_metrics",
    "plot_learning_curves",
    "plot_logit_scatter",
    "plot_std_pairs",
    "std_correlation",
]


def epoch_metrics(metrics_csv: str | os.PathLike, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of ``keys`` from a CSVLogger ``metrics.csv``.

    Lightning writes one row per logging call, so an epoch's values are spread over several rows; the last
    value of each key in an epoch is kept.

    Args:
        metrics_csv: the run's ``metrics.csv``.
        keys: logged names, e.g. ``["train/loss_epoch", "val/acc1"]``.

    Returns:
        For each key, ``[(epoch, value), ...]`` in epoch order.

    Raises:
        KeyError: if a key was never logged (the message lists the logged names).
    """
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    logged = set(rows[0]) if rows else set()
    out: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        if key not in logged:
            raise KeyError(f"{key!r} is not in {metrics_csv}; logged names: {sorted(logged)}")
        per_epoch = {int(r["epoch"]): float(r[key]) for r in rows if r.get(key) not in (None, "")}
        out[key] = sorted(per_epoch.items())
    return out


@torch.no_grad()
def collect_logits(networks: dict[str, nn.Module], loader: DataLoader) -> tuple[dict[str, Tensor], Tensor]:
    """Logits of several networks on every batch of ``loader`` (eval mode, no gradients, on the CPU).

    Args:
        networks: name -> classifier, e.g. ``{"teacher": module.teacher, "student": module.student}``.
        loader: batches of ``(inputs, targets)``.

    Returns:
        ``({name: (N, K) logits}, (N,) targets)``. Each network's train/eval mode is restored afterwards.
    """
    modes = {name: net.training for name, net in networks.items()}
    logits: dict[str, list[Tensor]] = {name: [] for name in networks}
    targets = []
    try:
        for net in networks.values():
            net.eval()
        for inputs, y in loader:
            for name, net in networks.items():
                device = next(net.parameters()).device
                logits[name].append(net(inputs.to(device)).float().cpu())
            targets.append(y)
    finally:
        for name, net in networks.items():
            net.train(modes[name])
    return {name: torch.cat(parts) for name, parts in logits.items()}, torch.cat(targets)


def plot_learning_curves(
    metrics: dict[str, list[tuple[int, float]]], *, axes: Sequence[Axes] | None = None, label: str = ""
) -> Sequence[Axes]:
    """One panel per metric, value against epoch (as :func:`epoch_metrics` returns them).

    Args:
        metrics: name -> ``[(epoch, value), ...]``.
        axes: panels to draw into (one per metric); new ones are made when ``None``.
        label: legend label of these curves (e.g. the run's name), to compare runs on the same panels.

    Returns:
        The panels.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, made = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
        axes = list(made[0])
    for ax, (name, points) in zip(axes, metrics.items(), strict=True):
        epochs, values = zip(*points, strict=True) if points else ((), ())
        ax.plot(epochs, values, marker="o", label=label or None)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if label:
            ax.legend()
    return axes


def plot_logit_scatter(logits: dict[str, Tensor], *, ax: Axes | None = None, max_points: int = 1000) -> Axes:
    r"""The paper's bivariate view of logits: each sample's logit mean against its logit standard deviation.

    Sun et al. (CVPR 2024, Figs. 1 and 3) plot, per sample, :math:`\mathrm{mean}_k\,x_k` against
    :math:`\mathrm{std}_k\,x_k`: a student trained with a temperature shared with its teacher is pushed onto
    the teacher's cloud, while a student trained on z-scored logits keeps its own range. One cloud per entry
    of ``logits``. Unbiased std, as the z-score.

    Args:
        logits: name -> ``(N, K)`` logits.
        ax: the axes to draw into; a new figure when ``None``.
        max_points: at most this many samples per cloud (the first ones), to keep the figure readable.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, x in logits.items():
        mean, std = per_sample_stats(x[:max_points])
        ax.scatter(mean.numpy(), std.numpy(), s=8, alpha=0.5, label=name)
    ax.set_xlabel("per-sample logit mean")
    ax.set_ylabel("per-sample logit std")
    ax.legend(markerscale=2)
    return ax


def std_correlation(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Pearson correlation, over samples, between the student's and the teacher's per-sample logit std.

    Near 1 when the student reproduces the teacher's logit range sample by sample, which a temperature shared by
    both asks of it in plain KD; logit standardization removes that demand.
    """
    _, s = per_sample_stats(student_logits)
    _, t = per_sample_stats(teacher_logits)
    return torch.corrcoef(torch.stack([s, t]))[0, 1].item()


def plot_std_pairs(
    teacher_logits: Tensor, students: dict[str, Tensor], *, ax: Axes | None = None, max_points: int = 1000
) -> Axes:
    """Each sample's student logit std against the teacher's, one cloud per student, with the diagonal.

    Args:
        teacher_logits: ``(N, K)`` teacher logits.
        students: name -> ``(N, K)`` logits of the same samples.
        ax: the axes to draw into; a new figure when ``None``.
        max_points: at most this many samples per cloud (the first ones).

    Returns:
        The axes; the legend gives each student's :func:`std_correlation`.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    _, t = per_sample_stats(teacher_logits[:max_points])
    for name, x in students.items():
        _, s = per_sample_stats(x[:max_points])
        r = std_correlation(x, teacher_logits)
        ax.scatter(t.numpy(), s.numpy(), s=8, alpha=0.5, label=f"{name} (r = {r:.2f})")
    low, high = t.min().item(), t.max().item()
    ax.plot([low, high], [low, high], color="gray", linewidth=1, label="student = teacher")
    ax.set_xlabel("teacher's per-sample logit std")
    ax.set_ylabel("student's per-sample logit std")
    ax.legend(markerscale=2)
    return ax
