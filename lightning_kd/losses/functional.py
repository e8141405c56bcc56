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


# --- Intermediate features ------------------------------------------------------------------------------------
#: Floor on the L2 norm when a map is normalized (``F.normalize``'s default, as in the reference codes of AT and
#: locality guidance): an all-zero map stays all-zero instead of becoming NaN.
NORM_EPS: float = 1e-12

#: The transforms of locality guidance (Li et al., ECCV 2022), applied to both features before the MSE.
GUIDANCE_TRANSFORMS: tuple[str, ...] = ("linear", "attention", "similarity")


def _check_maps(name: str, *feats: Tensor) -> None:
    """Raise a ``ValueError`` naming ``name`` unless every tensor is a ``(B, C, H, W)`` map with the same ``B``."""
    for feat in feats:
        if feat.ndim != 4:
            raise ValueError(
                f"{name} takes (batch, channels, height, width) feature maps, got shape {tuple(feat.shape)}: "
                "reshape transformer tokens (B, N, C) to a (B, C, h, w) grid without the class token first."
            )
    if len({feat.shape[0] for feat in feats}) > 1:
        raise ValueError(f"{name}: the feature maps have different batch sizes {[f.shape[0] for f in feats]}.")


def resize_to_larger(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Bilinearly resize two feature maps to the larger of their grids, each dimension on its own.

    Both maps are brought to :math:`(\max(H_a, H_b), \max(W_a, W_b))` with bilinear interpolation on half-pixel
    centres (``align_corners=False``), as locality guidance (Li et al., ECCV 2022) matches a ViT's token grid with a
    CNN stage. Upsampling the coarser map, never pooling the finer one, keeps the finer map's locality.
    A map already at the target size is returned as is (interpolating it would give the same values).

    Args:
        a: ``(B, C_a, H_a, W_a)`` feature map.
        b: ``(B, C_b, H_b, W_b)`` feature map (channels may differ).

    Returns:
        ``(a', b')``, both with spatial size :math:`(\max(H_a, H_b), \max(W_a, W_b))`.
    """
    _check_maps("resize_to_larger", a, b)
    size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))

    def resized(x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return resized(a), resized(b)


def pool_to_smaller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Adaptive-average-pool two feature maps to the smaller of their grids, each dimension on its own.

    Both maps are brought to :math:`(\min(H_a, H_b), \min(W_a, W_b))` with
    :func:`torch.nn.functional.adaptive_avg_pool2d` (bin :math:`i` of :math:`n` over :math:`m` inputs averages rows
    :math:`\lfloor im/n \rfloor` to :math:`\lceil (i+1)m/n \rceil - 1`). This is how the usual CIFAR
    attention-transfer code (mdistiller) compares stages of different resolutions. A map already at the target size
    is returned as is.

    Args:
        a: ``(B, C_a, H_a, W_a)`` feature map.
        b: ``(B, C_b, H_b, W_b)`` feature map.

    Returns:
        ``(a', b')``, both with spatial size :math:`(\min(H_a, H_b), \min(W_a, W_b))`.
    """
    _check_maps("pool_to_smaller", a, b)
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))

    def pooled(x: Tensor) -> Tensor:
        return x if tuple(x.shape[-2:]) == size else F.adaptive_avg_pool2d(x, size)

    return pooled(a), pooled(b)


def attention_map(feat: Tensor, p: float = 2.0, eps: float = NORM_EPS) -> Tensor:
    r"""Spatial attention map of Zagoruyko & Komodakis (ICLR 2017, arXiv:1612.03928), L2-normalized per sample.

    .. math::
        Q = \frac{a}{\max(\lVert a \rVert_2, \epsilon)},\quad
        a = \mathrm{vec}\Big(\frac{1}{C} \sum_{c=1}^{C} |F_c|^p\Big) \in \mathbb{R}^{HW}

    The channel mean differs from the paper's channel sum only by the factor :math:`C`, which the normalization
    removes (the reference codes use the mean). With ``p=2`` this is also the "attention" transform of locality
    guidance (Li et al., ECCV 2022).

    Args:
        feat: ``(B, C, H, W)`` feature map.
        p: the exponent :math:`p > 0` (the paper uses 2; larger values weight the most active locations more).
        eps: floor on the norm, so an all-zero map gives zeros.

    Returns:
        A ``(B, H * W)`` tensor whose rows have unit L2 norm (or are zero).
    """
    _check_maps("attention_map", feat)
    # |F|^p; for p = 2 the absolute value changes nothing, so skip it (one less elementwise pass)
    powered = feat.pow(2) if p == 2 else feat.abs().pow(p)  # (B, C, H, W)
    return F.normalize(powered.mean(dim=1).flatten(1), p=2.0, dim=1, eps=eps)  # (B, H*W)


def similarity_map(feat: Tensor, eps: float = NORM_EPS) -> Tensor:
    r"""Sample-similarity (Gram) map of a batch of features, each row L2-normalized.

    .. math::
        G = f f^\top \in \mathbb{R}^{B \times B},\quad
        \tilde G_{b} = \frac{G_{b}}{\max(\lVert G_{b} \rVert_2, \epsilon)}

    with :math:`f \in \mathbb{R}^{B \times CHW}` the flattened features. This is the "similarity" transform of
    locality guidance (Li et al., ECCV 2022): it compares how each model relates the samples of the batch, so the
    two models' channel counts need not agree.

    Args:
        feat: ``(B, ...)`` features (a ``(B, C, H, W)`` map in locality guidance).
        eps: floor on each row's norm, so an all-zero row gives zeros.

    Returns:
        A ``(B, B)`` tensor whose rows have unit L2 norm (or are zero).
    """
    flat = feat.flatten(1)  # (B, D)
    return F.normalize(flat @ flat.T, p=2.0, dim=1, eps=eps)  # (B, B)


def hint_mse(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    r"""FitNet's hint loss (Romero et al., ICLR 2015, arXiv:1412.6550): the mean squared error of two features.

    .. math::
        \mathcal{L}_{hint} = \frac{1}{N} \sum_i \big(r(s)_i - t_i\big)^2

    over all :math:`N` elements, where the caller has already applied the learnable regressor :math:`r` to the
    student's feature so that both tensors have the same shape.

    Args:
        student_feat: the regressed student feature, any shape.
        teacher_feat: the teacher feature, the same shape.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: the shapes differ (a silent broadcast would compute a different loss).
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"hint_mse needs features of the same shape, got student {tuple(student_feat.shape)} and teacher "
            f"{tuple(teacher_feat.shape)}: regress the student's channels to the teacher's and resize both to one "
            "grid first."
        )
    return (student_feat - teacher_feat).pow(2).mean()


def attention_transfer(student_feat: Tensor, teacher_feat: Tensor, p: float = 2.0) -> Tensor:
    r"""Attention-transfer loss of one matched pair of stages (Zagoruyko & Komodakis, ICLR 2017).

    .. math::
        \mathcal{L}_{AT} = \frac{1}{B\,HW} \sum_{b} \big\lVert Q^s_b - Q^t_b \big\rVert_2^2

    with :math:`Q` the normalized :func:`attention_map`, i.e. the mean squared difference of the maps, as the
    authors' code computes it (the paper writes the unsquared :math:`p`-norm of the difference; the code and every
    published CIFAR setting use this mean). Maps of different grids are first compared on the smaller one
    (:func:`pool_to_smaller`); the channel counts may differ.

    Args:
        student_feat: ``(B, C_s, H_s, W_s)`` student feature map.
        teacher_feat: ``(B, C_t, H_t, W_t)`` teacher feature map.
        p: the exponent of :func:`attention_map`.

    Returns:
        A scalar tensor (unweighted; the usual CIFAR weight is :math:`\beta = 1000` on the sum over stages).
    """
    s, t = pool_to_smaller(student_feat, teacher_feat)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


def locality_guidance(student_feat: Tensor, teacher_feat: Tensor, transform: str = "linear") -> Tensor:
    r"""Locality-guidance loss of one matched pair of layers (Li et al., ECCV 2022, arXiv:2207.10026).

    Both maps are resized to the larger grid (:func:`resize_to_larger`), transformed by :math:`\phi`, and compared
    by the mean squared error:

    .. math::
        \mathcal{L} = \frac{1}{N} \sum_i \big(\phi(s')_i - \phi(t')_i\big)^2,\quad
        (s', t') = \mathrm{resize}_{\max}(s, t)

    with :math:`\phi` one of

    - ``"linear"``: the identity. The learnable 1x1-convolution regressor of that variant maps the student's channels
      to the teacher's; it is state, so the caller applies it to ``student_feat`` before this function (the
      reference applies it before the resize too).
    - ``"attention"``: :func:`attention_map` with :math:`p = 2`, ``(B, H W)``.
    - ``"similarity"``: :func:`similarity_map`, ``(B, B)``.

    Args:
        student_feat: ``(B, C, H_s, W_s)`` student feature map (regressed to the teacher's channels for ``"linear"``).
        teacher_feat: ``(B, C_t, H_t, W_t)`` teacher feature map.
        transform: one of :data:`GUIDANCE_TRANSFORMS`.

    Returns:
        A scalar tensor (unweighted; the paper's weight is 2.5 on the sum over layers).

    Raises:
        ValueError: for an unknown ``transform``, or (``"linear"``) channel counts that differ.
    """
    if transform not in GUIDANCE_TRANSFORMS:
        raise ValueError(f"Unknown locality-guidance transform {transform!r}: use one of {list(GUIDANCE_TRANSFORMS)}.")
    s, t = resize_to_larger(student_feat, teacher_feat)
    if transform == "attention":
        s, t = attention_map(s, 2.0), attention_map(t, 2.0)
    elif transform == "similarity":
        s, t = similarity_map(s), similarity_map(t)
    return hint_mse(s, t)
