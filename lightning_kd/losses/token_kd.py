"""DeiT-style distillation through a distillation token: soft KD on its head, cross-entropy on the class head."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.base import DistillationLoss, check_temperature, check_weight
from lightning_kd.losses.functional import kd_divergence, standardize_logits


class TokenKD(DistillationLoss):
    r"""Knowledge distillation into a vision transformer's distillation token (Touvron et al., ICML 2021, "soft"
    distillation), with optional logit standardization (Sun et al., CVPR 2024).

    The student has two heads (:attr:`student_heads` = 2): the class token's, :math:`c`, and the distillation
    token's, :math:`d`. With :math:`f` the identity or, with ``standardize=True``, the per-sample z-score:

    .. math::
        \mathcal{L} = w_{ce}\,\mathrm{CE}(c, y) + w_{kd}\,\tau^2\,
        \mathrm{KL}\big(\mathrm{softmax}(f(t)/\tau)\,\|\,\mathrm{softmax}(f(d)/\tau)\big)

    At evaluation the student predicts with the mean of both heads (the DeiT convention its ``forward`` follows in
    eval mode). The module calls the student's ``forward_heads(x) -> (class_logits, distillation_logits)`` for this
    loss, so the student must have a distillation token (``create_model("deit_tiny_distilled")``).

    The defaults are the paper's DeiT-Ti run (official ``tiny-transformers`` code, ``docs/sources.md`` §7): base
    temperature 3 and an extra weight of 10 on the standardized KD term (the log its README's 78.55 links,
    ``deit-ti_c100_KD_ours_3_10``), and the class-head cross-entropy weighted 0.5 (its trainer halves ``loss_cls``
    whenever logit distillation is on; the first version of that file weighted it ``1 - LOGIT_WEIGHT = 0``).

    Args:
        temperature: the (base) temperature :math:`\tau > 0`.
        kd_weight: weight of the distillation-head term, >= 0.
        ce_weight: weight of the class-head cross-entropy, >= 0.
        standardize: z-score both logits per sample before the KL.

    Raises:
        ValueError: a non-positive temperature, a negative weight, or student logits that are not two heads.
    """

    #: the student gives two heads per image (class token, distillation token)
    student_heads: ClassVar[int] = 2

    def __init__(
        self, temperature: float = 3.0, kd_weight: float = 10.0, ce_weight: float = 0.5, standardize: bool = True
    ) -> None:
        super().__init__()
        check_temperature("temperature", temperature)
        check_weight("kd_weight", kd_weight)
        check_weight("ce_weight", ce_weight)
        self.temperature = float(temperature)
        self.kd_weight = float(kd_weight)
        self.ce_weight = float(ce_weight)
        self.standardize = bool(standardize)

    def forward(
        self, student_logits: tuple[Tensor, Tensor], teacher_logits: Tensor, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        if not isinstance(student_logits, (tuple, list)) or len(student_logits) != 2:
            raise ValueError(
                "TokenKD takes the student's two heads (class_logits, distillation_logits): use a student with a "
                "distillation token (e.g. deit_tiny_distilled), whose forward_heads the module calls."
            )
        cls, dist = student_logits
        self._check_inputs(dist, teacher_logits, targets)
        # fp32 whatever the input dtype (std and exp/log over ~100 classes)
        d, t = dist.float(), teacher_logits.float()
        ce = F.cross_entropy(cls.float(), targets)
        if self.standardize:
            d, t = standardize_logits(d), standardize_logits(t)
        return {"ce": self.ce_weight * ce, "kd": self.kd_weight * kd_divergence(d, t, self.temperature)}
