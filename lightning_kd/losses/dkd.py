"""Decoupled knowledge distillation, optionally with logit standardization."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses._checks import check_epoch, check_positive_int
from lightning_kd.losses.base import DistillationLoss, check_temperature, check_weight
from lightning_kd.losses.functional import dkd_terms, standardize_logits


class DKD(DistillationLoss):
    r"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022) with optional logit standardization (Sun et al.).

    .. math::
        \mathcal{L} = w_{ce}\,\mathrm{CE}(s, y)
        + \min\!\big(\tfrac{e}{W}, 1\big)\big(\alpha\,\mathrm{TCKD}(f(s), f(t)) + \beta\,\mathrm{NCKD}(f(s), f(t))\big)

    with :math:`e` the epoch (counted from 1, so epoch 1 already gets :math:`1/W`), :math:`W` the warm-up,
    TCKD / NCKD as in :func:`~lightning_kd.losses.functional.dkd_terms` (each multiplied by :math:`\tau^2`), and
    :math:`f` the identity or, with ``standardize=True``, the per-sample z-score applied to both logits before the
    division by :math:`\tau` (then ``temperature`` is the base temperature). Cross-entropy uses the raw student
    logits.

    Defaults are the DKD paper's CIFAR-100 values (``alpha=1, beta=8, temperature=4, warmup=20, ce_weight=1``).
    The LS paper's "DKD + Ours" multiplies alpha and beta by its ``kd_weight``: e.g. resnet32x4 -> resnet8x4 uses
    ``alpha=9, beta=72, temperature=2, standardize=True`` (per-pair values: ``docs/sources.md`` §2.6 and the presets).

    Reference fidelity: the values equal the reference's wherever they are finite. Two numerical details differ,
    neither changing a finite result: the target/non-target probabilities are combined in log space (the
    reference takes ``log`` of summed probabilities, ``-inf`` once the target probability underflows), and NCKD
    drops the target class exactly instead of subtracting 1000 from its logit.

    Args:
        alpha: weight :math:`\alpha \ge 0` of the target-class term TCKD.
        beta: weight :math:`\beta \ge 0` of the non-target-class term NCKD.
        temperature: softmax temperature :math:`\tau > 0` (the base temperature when standardizing).
        warmup: :math:`W`, the number of epochs of the linear warm-up of the distillation terms (integer >= 1;
            1 gives full weight from the first epoch).
        ce_weight: weight of the cross-entropy term, >= 0.
        standardize: z-score both logits per sample before TCKD and NCKD (logit standardization, arXiv:2403.01427).

    Raises:
        ValueError: for a non-positive temperature, a negative weight, a warm-up below 1, fewer than 2 classes,
            or an epoch below 1.

    Example::

        >>> import torch
        >>> loss = DKD(alpha=9.0, beta=72.0, temperature=2.0, standardize=True)
        >>> terms = loss(torch.randn(8, 100), torch.randn(8, 100), torch.randint(0, 100, (8,)), epoch=5)
        >>> sorted(terms)
        ['ce', 'nckd', 'tckd']
    """

    #: the warm-up factor min(epoch / warmup, 1) changes with the epoch
    epoch_dependent = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: int = 20,
        ce_weight: float = 1.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        check_weight("alpha", alpha)
        check_weight("beta", beta)
        check_temperature("temperature", temperature)
        check_positive_int("warmup", warmup, "epochs of linear warm-up; 1 means no warm-up")
        check_weight("ce_weight", ce_weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup = int(warmup)
        self.ce_weight = float(ce_weight)
        self.standardize = bool(standardize)

    def warmup_factor(self, epoch: int) -> float:
        """The linear warm-up factor ``min(epoch / warmup, 1)`` of the distillation terms at ``epoch`` (from 1)."""
        check_epoch(epoch)
        return min(epoch / self.warmup, 1.0)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        self._check_inputs(student_logits, teacher_logits, targets)
        if student_logits.shape[-1] < 2:
            raise ValueError(f"DKD needs at least 2 classes (target and non-target), got {student_logits.shape[-1]}.")
        factor = self.warmup_factor(epoch)
        # fp32 whatever the input dtype: std over ~100 classes and exp/log are fragile in fp16/bf16
        s, t = student_logits.float(), teacher_logits.float()
        ce = F.cross_entropy(s, targets)
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        tckd, nckd = dkd_terms(s, t, targets, self.temperature)
        return {"ce": self.ce_weight * ce, "tckd": factor * self.alpha * tckd, "nckd": factor * self.beta * nckd}
