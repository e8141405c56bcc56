"""Default optimizer and learning-rate schedule factories (the reference CIFAR-100 recipe), and the warm-up + cosine
schedule of the paper's ViT table.

The defaults are plain functions so that LightningCLI prints them by import path and reads them back; configs that
want other values give ``class_path: torch.optim.SGD`` with ``init_args`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

__all__ = [
    "SelectiveDecayAdamW",
    "SelectiveDecaySGD",
    "WarmupCosineLR",
    "cifar_multistep",
    "cifar_sgd",
    "decays",
    "weight_decay_groups",
]


def cifar_sgd(params: Iterable[torch.nn.Parameter]) -> Optimizer:
    """SGD with lr 0.05, momentum 0.9, weight decay 5e-4 (the reference CIFAR-100 recipe)."""
    return SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def cifar_multistep(optimizer: Optimizer) -> LRScheduler:
    """Step decay x0.1 at epochs 150, 180 and 210 (the reference 240-epoch CIFAR-100 schedule)."""
    return MultiStepLR(optimizer, milestones=[150, 180, 210], gamma=0.1)


def decays(param: torch.Tensor) -> bool:
    """Whether weight decay applies to ``param`` under the ViT table's rule (its pycls parameter groups).

    Exempt: tensors of at most one dimension (biases, norm scales and shifts) and tensors of three or more dimensions
    whose first is 1 (class / distillation tokens, position embeddings: ``(1, N, C)``, ``(1, C, H, W)``). The
    reference decides by name (``.bias``, 1-D, ``cls_token``, ``pos_embed``, ``distill_token``); the factories here
    receive parameters without names, and on the ViT table's networks both rules pick the same tensors (tested).
    """
    return not (param.ndim <= 1 or (param.ndim >= 3 and param.shape[0] == 1))


def weight_decay_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Two parameter groups: ``weight_decay`` for the tensors :func:`decays` accepts, 0 for the rest."""
    params = list(params)
    return [
        {"params": [p for p in params if not decays(p)], "weight_decay": 0.0},
        {"params": [p for p in params if decays(p)], "weight_decay": weight_decay},
    ]


class SelectiveDecayAdamW(AdamW):
    """AdamW whose weight decay skips biases, norms, tokens and position embeddings (:func:`decays`).

    The optimizer of the paper's ViT table (its ``pycls/core/optimizer.py`` puts those parameters in groups with
    weight decay 0, docs/sources.md §7.3). Takes ``torch.optim.AdamW``'s arguments; ``params`` must be tensors
    (the modules here pass their trainable parameters), not groups.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(
            weight_decay_groups(params, weight_decay), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay
        )


class SelectiveDecaySGD(SGD):
    """SGD whose weight decay skips biases and norm parameters (:func:`decays`): the ViT table's teacher optimizer.

    Takes ``torch.optim.SGD``'s arguments; ``params`` must be tensors, not groups.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            weight_decay_groups(params, weight_decay),
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )


class WarmupCosineLR(LRScheduler):
    r"""Linear warm-up, then a cosine from the base rate down to ``min_lr``; one value per epoch.

    For epoch :math:`e` (counted from 0, the value the optimizer uses throughout that epoch), base rate :math:`b`,
    :math:`W` warm-up epochs, :math:`E` = ``max_epochs`` and warm-up factor :math:`f`:

    .. math::
        \mathrm{lr}(e) = \begin{cases}
            f b + e\,(b - f b) / W & e < W \\
            m + \tfrac12 (b - m)\,(1 + \cos(\pi e / E)) & W \le e < E \\
            m & e \ge E
        \end{cases}

    with :math:`m` = ``min_lr``. The cosine is measured from epoch 0, not from the end of the warm-up, so the rate
    after the warm-up is already slightly below :math:`b`. This is the schedule of the paper's ViT table: its
    ``tiny-transformers`` code builds timm's ``CosineLRScheduler(t_initial=MAX_EPOCH, lr_min=MIN_LR,
    warmup_t=WARMUP_EPOCHS, warmup_lr_init=WARMUP_FACTOR * BASE_LR)`` and steps it once per epoch
    (docs/sources.md §7.3); e.g. DeiT-Ti: ``max_epochs=300, warmup_epochs=20, warmup_factor=0.001, min_lr=5e-6``.
    Each parameter group uses its own base rate (timm starts every group's warm-up at one absolute rate; the two
    agree when the groups share a base rate, as in the reference).

    Step it once per epoch (``interval: epoch``, how the modules here step every scheduler).

    Args:
        optimizer: The optimizer whose groups' ``lr`` it sets.
        max_epochs: Length :math:`E` of the cosine, in epochs (the reference's ``MAX_EPOCH``).
        warmup_epochs: Epochs :math:`W` of linear warm-up; 0 for none.
        warmup_factor: The warm-up starts at ``warmup_factor`` times the base rate.
        min_lr: The rate the cosine ends at (and stays at after ``max_epochs``).
        last_epoch: The index of the last epoch run, for resuming; -1 to start.

    Raises:
        ValueError: A ``max_epochs`` below 1, a negative or too long warm-up, or a negative ``warmup_factor`` /
            ``min_lr``.

    Example::

        >>> model = torch.nn.Linear(2, 2)
        >>> optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
        >>> scheduler = WarmupCosineLR(optimizer, max_epochs=300, warmup_epochs=20, warmup_factor=0.001, min_lr=5e-6)
        >>> round(optimizer.param_groups[0]["lr"], 10)  # epoch 0: 0.001 * 5e-4
        5e-07
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_epochs: int,
        warmup_epochs: int = 0,
        warmup_factor: float = 0.1,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"max_epochs must be an integer >= 1 (the cosine's length in epochs), got {max_epochs!r}.")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or not 0 <= warmup_epochs < max_epochs:
            raise ValueError(
                f"warmup_epochs must be an integer in [0, max_epochs) = [0, {max_epochs}), got {warmup_epochs!r}."
            )
        for name, value in (("warmup_factor", warmup_factor), ("min_lr", min_lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_factor = float(warmup_factor)
        self.min_lr = float(min_lr)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The rate of epoch ``epoch`` (counted from 0) for a group whose base rate is ``base_lr``."""
        if epoch < self.warmup_epochs:
            start = self.warmup_factor * base_lr
            return start + epoch * (base_lr - start) / self.warmup_epochs
        if epoch >= self.max_epochs:
            return self.min_lr
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * epoch / self.max_epochs))

    def get_lr(self) -> list[float]:
        """The rates of epoch ``last_epoch`` (closed form: the same whether stepped or resumed)."""
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
