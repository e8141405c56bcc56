"""Classic knowledge distillation, optionally with logit standardization."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.base import DistillationLoss, check_temperature, check_weight
from lightning_kd.losses.functional import kd_divergence, standardize_logits


class KD(DistillationLoss):
    r"""Knowledge distillation (Hinton et al., 2015) with optional logit standardization (Sun et al., 2024).

    .. math::
        \mathcal{L} = w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\tau^2\,
        \mathrm{KL}\big(\mathrm{softmax}(f(t)/\tau)\,\|\,\mathrm{softmax}(f(s)/\tau)\big)

    where :math:`f` is the identity, or with ``standardize=True`` the per-sample z-score
    :func:`~lightning_kd.losses.functional.standardize_logits` (then :math:`\tau` is the *base* temperature and
    each model's adaptive temperature is :math:`\tau\,\sigma(\cdot)`). The cross-entropy always uses the raw
    student logits.

    Defaults are the classic CIFAR-100 KD baseline (CRD paper): ``temperature=4, ce_weight=0.1, kd_weight=0.9``.
    The paper's "KD + Ours" settings are typically ``temperature=2, kd_weight=9, standardize=True``.

    Args:
        temperature: softmax temperature :math:`\tau > 0` (the base temperature when standardizing).
        ce_weight: weight of the cross-entropy term, >= 0.
        kd_weight: weight of the distillation term, >= 0.
        standardize: z-score both logits per sample before the KL (logit standardization, arXiv:2403.01427).

    Raises:
        ValueError: for a non-positive temperature or a negative weight.

    Example::

        >>> import torch
        >>> loss = KD(temperature=2.0, kd_weight=9.0, standardize=True)
        >>> terms = loss(torch.randn(8, 100), torch.randn(8, 100), torch.randint(0, 100, (8,)))
        >>> sorted(terms)
        ['ce', 'kd']
    """

    def __init__(
        self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9, standardize: bool = False
    ) -> None:
        super().__init__()
        check_temperature("temperature", temperature)
        check_weight("ce_weight", ce_weight)
        check_weight("kd_weight", kd_weight)
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.standardize = bool(standardize)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        self._check_inputs(student_logits, teacher_logits, targets)
        # fp32 whatever the input dtype: std over ~100 classes and exp/log are fragile in fp16/bf16
        s, t = student_logits.float(), teacher_logits.float()
        ce = F.cross_entropy(s, targets)
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        kd = kd_divergence(s, t, self.temperature)
        return {"ce": self.ce_weight * ce, "kd": self.kd_weight * kd}
