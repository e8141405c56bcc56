"""Default optimizer and learning-rate schedule factories (the reference CIFAR-100 recipe).

They are plain functions so that LightningCLI prints them by import path and reads them back; configs that
want other values give ``class_path: torch.optim.SGD`` with ``init_args`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR


def cifar_sgd(params: Iterable[torch.nn.Parameter]) -> Optimizer:
    """SGD with lr 0.05, momentum 0.9, weight decay 5e-4 (the reference CIFAR-100 recipe)."""
    return SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def cifar_multistep(optimizer: Optimizer) -> LRScheduler:
    """Step decay x0.1 at epochs 150, 180 and 210 (the reference 240-epoch CIFAR-100 schedule)."""
    return MultiStepLR(optimizer, milestones=[150, 180, 210], gamma=0.1)
