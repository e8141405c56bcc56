"""Pure tensor math for logit distillation.

Everything here is a stateless function on logits of shape ``(B, K)`` (batch, classes). The
:class:`~lightning_kd.losses.base.DistillationLoss` strategies are thin wrappers around these.
"""

from __future__ import annotations

import math
from typing import Any

import torch
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


def _kl_rows(log_p_teacher: Tensor, log_q_student: Tensor) -> Tensor:
    """Row-wise KL(p || q) from log-probabilities, ``(B, C) -> (B,)``.

    Taking log-probabilities (finite for finite logits) and exponentiating the teacher's keeps ``p log p``
    exact where ``p`` underflows to 0, where ``p * (log p - log q)`` on probabilities would give ``0 * -inf``.
    """
    return (log_p_teacher.exp() * (log_p_teacher - log_q_student)).sum(dim=-1)


def kd_divergence_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor) -> Tensor:
    r"""Per-sample temperature-scaled KL divergence: :func:`kd_divergence` before the batch mean.

    .. math::
        \ell_b = \tau^2 \sum_k p^t_{bk} \left(\log p^t_{bk} - \log q^s_{bk}\right)

    Args:
        student_logits: ``(B, K)`` student logits.
        teacher_logits: ``(B, K)`` teacher logits, same shape.
        temperature: :math:`\tau > 0`, a number or a scalar tensor (gradients reach it).

    Returns:
        A ``(B,)`` tensor.
    """
    log_q_student = F.log_softmax(student_logits / temperature, dim=-1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, K)
    return _kl_rows(log_p_teacher, log_q_student) * temperature**2  # (B,)


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
    return kd_divergence_per_sample(student_logits, teacher_logits, temperature).mean()


# --- DKD ------------------------------------------------------------------------------------------------------
def non_target_indices(targets: Tensor, num_classes: int) -> Tensor:
    """Indices of every class but the target, in increasing order: ``(B,) -> (B, K - 1)``.

    Built arithmetically (no boolean indexing), so it never synchronizes with an accelerator.
    """
    columns = torch.arange(num_classes - 1, device=targets.device)  # (K-1,)
    return columns + (columns >= targets.unsqueeze(-1)).long()  # (B, K-1): skip the target column


def _binary_log_probs(log_probs: Tensor, targets: Tensor, others: Tensor) -> Tensor:
    """``(B, K)`` log-probabilities -> ``(B, 2)``: log p(target) and log of the summed non-target mass."""
    log_target = log_probs.gather(-1, targets.unsqueeze(-1))  # (B, 1)
    log_other = log_probs.gather(-1, others).logsumexp(dim=-1, keepdim=True)  # (B, 1) = log sum_{k!=y} p_k
    return torch.cat([log_target, log_other], dim=-1)


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    r"""The two unweighted terms of Decoupled Knowledge Distillation (Zhao et al., CVPR 2022, arXiv:2203.08679).

    With :math:`p = \mathrm{softmax}(z / \tau)` for each model and :math:`y` the target class:

    .. math::
        \mathrm{TCKD} = \tau^2 \frac{1}{B} \sum_b \mathrm{KL}\big(b^t_b \,\|\, b^s_b\big),\quad
        b = \big[p_y,\ \textstyle\sum_{k \neq y} p_k\big]

    .. math::
        \mathrm{NCKD} = \tau^2 \frac{1}{B} \sum_b \mathrm{KL}\big(\hat p^t_b \,\|\, \hat p^s_b\big),\quad
        \hat p = \mathrm{softmax}_{k \neq y}(z_k / \tau)

    The binary log-probabilities are computed as log-sum-exp of log-softmax values: the same numbers as the
    reference's log of summed probabilities, without its ``log(0)`` when the target probability underflows.
    The reference removes the target class from NCKD's softmax by subtracting 1000 from its logit; here it
    is dropped exactly (identical values whenever the scaled logits span much less than 1000).

    Args:
        student_logits: ``(B, K)`` student logits (standardized by the caller when LS is on), ``K >= 2``.
        teacher_logits: ``(B, K)`` teacher logits.
        targets: ``(B,)`` integer class indices.
        temperature: :math:`\tau > 0`.

    Returns:
        ``(tckd, nckd)``, two scalar tensors, each already multiplied by :math:`\tau^2`.
    """
    num_classes = student_logits.shape[-1]
    others = non_target_indices(targets, num_classes)  # (B, K-1)
    s, t = student_logits / temperature, teacher_logits / temperature  # (B, K)
    log_b_student = _binary_log_probs(F.log_softmax(s, dim=-1), targets, others)  # (B, 2)
    log_b_teacher = _binary_log_probs(F.log_softmax(t, dim=-1), targets, others)  # (B, 2)
    tckd = _kl_rows(log_b_teacher, log_b_student).mean() * temperature**2
    # NCKD is plain KD restricted to the non-target classes
    nckd = kd_divergence(s.gather(-1, others), t.gather(-1, others), 1.0) * temperature**2
    return tckd, nckd


# --- MLKD -----------------------------------------------------------------------------------------------------
def class_correlation(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, class_weights: Tensor | None = None
) -> Tensor:
    r"""Class-correlation discrepancy of Multi-Level Logit Distillation (Jin et al., CVPR 2023).

    .. math::
        \mathrm{CC} = \frac{1}{K} \big\lVert P_s^\top P_s - P_t^\top P_t \big\rVert_F^2,\quad
        P = \mathrm{softmax}(z / \tau) \in \mathbb{R}^{B \times K}

    Args:
        student_logits: ``(B, K)`` raw student logits (the reference never standardizes this term).
        teacher_logits: ``(B, K)`` raw teacher logits.
        temperature: :math:`\tau > 0`.
        class_weights: optional ``(K,)`` weights; column :math:`k` of the squared difference is multiplied
            by ``class_weights[k]`` before the sum (per-class masking; the ``(K, K)`` matrices are symmetric,
            so rows or columns give the same value).

    Returns:
        A scalar tensor.
    """
    p_s = F.softmax(student_logits / temperature, dim=-1)  # (B, K)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)  # (B, K)
    squared = (p_t.T @ p_t - p_s.T @ p_s).pow(2)  # (K, K)
    if class_weights is not None:
        squared = squared * class_weights
    return squared.sum() / student_logits.shape[-1]


def batch_correlation(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, sample_weights: Tensor | None = None
) -> Tensor:
    r"""Batch-correlation (instance-relation) discrepancy of Multi-Level Logit Distillation (Jin et al., 2023).

    .. math::
        \mathrm{BC} = \frac{1}{B} \big\lVert P_s P_s^\top - P_t P_t^\top \big\rVert_F^2,\quad
        P = \mathrm{softmax}(z / \tau) \in \mathbb{R}^{B \times K}

    Args:
        student_logits: ``(B, K)`` raw student logits (the reference never standardizes this term).
        teacher_logits: ``(B, K)`` raw teacher logits.
        temperature: :math:`\tau > 0`.
        sample_weights: optional ``(B,)`` weights; column :math:`b` of the squared difference is multiplied
            by ``sample_weights[b]`` before the sum (per-sample masking).

    Returns:
        A scalar tensor.
    """
    p_s = F.softmax(student_logits / temperature, dim=-1)  # (B, K)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)  # (B, K)
    squared = (p_t @ p_t.T - p_s @ p_s.T).pow(2)  # (B, B)
    if sample_weights is not None:
        squared = squared * sample_weights
    return squared.sum() / student_logits.shape[0]


def confidence_masks(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    r"""MLKD's low-confidence masks from the teacher's softmax at temperature 1 (raw logits).

    .. math::
        m^{sample}_b = \big[\max_k p_{bk} \le \mathrm{median}_b(\max_k p_{bk})\big],\quad
        m^{class}_k = \big[\textstyle\sum_b p_{bk} \le \mathrm{median}_k(\sum_b p_{bk})\big]

    The median is the linearly interpolated 50th percentile (``np.percentile(x, 50)`` in the reference,
    :func:`torch.quantile` here), computed on the device: no host synchronization.

    Args:
        teacher_logits: ``(B, K)`` raw teacher logits of the weak view.

    Returns:
        ``(sample_mask, class_mask)``: boolean tensors of shapes ``(B,)`` and ``(K,)``; roughly the
        lower-confidence half of the samples and of the classes.
    """
    probs = F.softmax(teacher_logits.detach(), dim=-1)  # (B, K)
    confidence = probs.amax(dim=-1)  # (B,)
    class_confidence = probs.sum(dim=0)  # (K,)
    sample_mask = confidence <= torch.quantile(confidence, 0.5, interpolation="linear")
    class_mask = class_confidence <= torch.quantile(class_confidence, 0.5, interpolation="linear")
    return sample_mask, class_mask


# --- CTKD -----------------------------------------------------------------------------------------------------
class GradientReversal(torch.autograd.Function):
    r"""Identity in the forward pass; multiplies the incoming gradient by :math:`\lambda` in the backward pass.

    As in CTKD (Li et al., AAAI 2023, arXiv:2211.16231) there is no built-in minus sign: the gradient is
    *reversed* by a negative :math:`\lambda` (CTKD's schedule runs from 0 to -1), so the parameter behind
    it ascends the loss that the student descends. Use it through :func:`gradient_reversal`.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.clone()  # a new tensor, so autograd records this node

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output * ctx.lambda_, None


def gradient_reversal(x: Tensor, lambda_: float) -> Tensor:
    r"""Apply :class:`GradientReversal`: ``x`` unchanged, its gradient scaled by ``lambda_`` (reversed if < 0)."""
    return GradientReversal.apply(x, lambda_)


def cosine_decay(step: int | float, max_value: float, min_value: float, num_steps: int) -> float:
    r"""Cosine schedule from ``max_value`` (step 0) to ``min_value`` (step ``num_steps`` and after).

    .. math::
        v(e) = \tfrac12 \big(\cos(\pi \, \min(\max(e, 0), L) / L) + 1\big)(v_{max} - v_{min}) + v_{min}

    CTKD's ``CosineDecay``, called with the 1-indexed epoch: with ``max 0, min -1, L 10`` epoch 1 gives
    -0.0245 and every epoch from 10 on gives -1. A plain Python float: no tensor, no synchronization.

    Args:
        step: the current step (CTKD: the epoch, counted from 1); clamped to ``[0, num_steps]``.
        max_value: the value at step 0.
        min_value: the value from ``num_steps`` on.
        num_steps: the length :math:`L \ge 1` of the decay.

    Returns:
        The scheduled value.
    """
    clamped = min(max(step, 0), num_steps)
    return 0.5 * (math.cos(math.pi * clamped / num_steps) + 1.0) * (max_value - min_value) + min_value


def curriculum_temperature(theta: Tensor, lambda_: float, t_start: float, t_end: float) -> Tensor:
    r"""CTKD's global temperature :math:`\tau = t_{start} + t_{end} \cdot \sigma(\mathrm{GRL}_\lambda(\theta))`.

    Args:
        theta: the learnable temperature logit (any shape; CTKD's is ``(1,)``).
        lambda_: the gradient-reversal factor for the current epoch (see :func:`cosine_decay`).
        t_start: the lowest temperature, reached as :math:`\sigma \to 0`.
        t_end: the range: the temperature lies in :math:`(t_{start}, t_{start} + t_{end})`.

    Returns:
        A tensor of the shape of ``theta``; its gradient flows back to ``theta`` scaled by ``lambda_``.
    """
    return t_start + t_end * torch.sigmoid(gradient_reversal(theta, lambda_))
