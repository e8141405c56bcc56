"""One training step of the reference-style plain loop, the baseline every speed benchmark here compares against."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def reference_step(
    student: nn.Module,
    teacher: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
) -> None:
    """Teacher forward under ``no_grad``, student forward, loss (CE + KD terms), ``zero_grad``, backward, step.

    The plain PyTorch step of the paper's reference code: no logging, no metrics, no framework.
    """
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    terms = loss(student(inputs), teacher_logits, targets)
    optimizer.zero_grad()
    (terms["ce"] + terms["kd"]).backward()
    optimizer.step()
