"""Distillation losses: pure math in :mod:`.functional`, one strategy class per file."""

from lightning_kd.losses.base import DistillationLoss
from lightning_kd.losses.ctkd import CTKD
from lightning_kd.losses.dkd import DKD
from lightning_kd.losses.functional import (
    GradientReversal,
    batch_correlation,
    class_correlation,
    confidence_masks,
    cosine_decay,
    curriculum_temperature,
    dkd_terms,
    gradient_reversal,
    kd_divergence,
    kd_divergence_per_sample,
    non_target_indices,
    standardize_logits,
)
from lightning_kd.losses.kd import KD
from lightning_kd.losses.mlkd import MLKD

__all__ = [
    "CTKD",
    "DKD",
    "KD",
    "MLKD",
    "DistillationLoss",
    "GradientReversal",
    "batch_correlation",
    "class_correlation",
    "confidence_masks",
    "cosine_decay",
    "curriculum_temperature",
    "dkd_terms",
    "gradient_reversal",
    "kd_divergence",
    "kd_divergence_per_sample",
    "non_target_indices",
    "standardize_logits",
]
