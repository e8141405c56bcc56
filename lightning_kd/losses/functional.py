"""Pure tensor math for logit distillation.

Everything here is a stateless function on logits of shape ``(B, K)`` (batch, classes). The
:class:`~lightning_kd.losses.base.DistillationLoss` strategies are thin wrappers around these.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

#: Added to the standard deviation (not the variance) so a constant row maps to zeros instead of NaN.
#: The value is the one of the official logit-standardization code (Sun et al., 2024).
STD_EPS: float = 1e-7


def standardize_logits(logits: Tensor, eps: float = STD_EPS) -> Tensor:
    r"""Z-score each sample's logits over the class dimension.

    .. math::
        \mathcal{Z}(x) = \frac{x - \bar{x}}{\sigma(x) + \epsilon}

    with :math:`\bar{x}` the mean and :math:`\sigma(x)` the *unbiased* standard deviation (Bessel's
    correction, divides by :math:`K - 1`) over the last dimension, as in the official code of
    *Logit Standardization in Knowledge Distillation* (Sun et al., CVPR 2024, arXiv:2403.01427).
    The base temperature is applied by the caller (``Z(x) / tau``).

    Args:
        logits: tensor of shape ``(..., K)``.
        eps: added to the standard deviation; a constant row gives zeros, never NaN.

    Returns:
        A tensor of the same shape and dtype as ``logits`` with zero mean and (up to ``eps``) unit
        unbiased standard deviation along the last dimension.
    """
    mean = logits.mean(dim=-1, keepdim=True)  # (..., 1)
    std = logits.std(dim=-1, keepdim=True)  # (..., 1), unbiased
    return (logits - mean) / (std + eps)


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor) -> Tensor:
    r"""Temperature-scaled KL divergence of Hinton et al. (2015), batch-mean reduced.

    .. math::
        \mathcal{L}_{KD} = \tau^2 \cdot \frac{1}{B} \sum_b \sum_k p^t_{bk}
        \left(\log p^t_{bk} - \log q^s_{bk}\right),\quad
        p^t = \mathrm{softmax}(t / \tau),\ q^s = \mathrm{softmax}(s / \tau)

    i.e. :math:`\tau^2 \, \mathrm{KL}(p^t \,\|\, q^s)` with the teacher as the target distribution.

    Args:
        student_logits: ``(B, K)`` student logits (already standardized when logit standardization is on).
        teacher_logits: ``(B, K)`` teacher logits, same shape.
        temperature: the (base) temperature :math:`\tau > 0`; a tensor is allowed so a learned
            temperature (CTKD) receives gradients through both the softmax and the :math:`\tau^2` factor.

    Returns:
        A scalar tensor.
    """
    log_q_student = F.log_softmax(student_logits / temperature, dim=-1)  # (B, K)
    # log-softmax of the teacher, then exp, so that p * log p is exact where p underflows to 0
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, K)
    per_sample = (log_p_teacher.exp() * (log_p_teacher - log_q_student)).sum(dim=-1)  # (B,)
    return per_sample.mean() * temperature**2
