"""Distillation losses: pure math in :mod:`.functional`, one strategy class per file."""

from lightning_kd.losses.base import DistillationLoss
from lightning_kd.losses.ctkd import CTKD
from lightning_kd.losses.dkd import DKD
from lightning_kd.losses.features import AT, FeatureLoss, FitNet, LocalityGuidance
from lightning_kd.losses.functional import (
    GUIDANCE_TRANSFORMS,
    NORM_EPS,
    GradientReversal,
    attention_map,
    attention_transfer,
    batch_correlation,
    class_correlation,
    confidence_masks,
    cosine_decay,
    curriculum_temperature,
    dkd_terms,
    gradient_reversal,
    hint_mse,
    kd_divergence,
    kd_divergence_per_sample,
    locality_guidance,
    non_target_indices,
    pool_to_smaller,
    resize_to_larger,
    similarity_map,
    standardize_logits,
)
from lightning_kd.losses.kd import KD
from lightning_kd.losses.mlkd import MLKD
from lightning_kd.losses.token_kd import TokenKD

__all__ = [
    "AT",
    "CTKD",
    "DKD",
    "GUIDANCE_TRANSFORMS",
    "KD",
    "MLKD",
    "NORM_EPS",
    "DistillationLoss",
    "FeatureLoss",
    "FitNet",
    "GradientReversal",
    "LocalityGuidance",
    "TokenKD",
    "attention_map",
    "attention_transfer",
    "batch_correlation",
    "class_correlation",
    "confidence_masks",
    "cosine_decay",
    "curriculum_temperature",
    "dkd_terms",
    "gradient_reversal",
    "hint_mse",
    "kd_divergence",
    "kd_divergence_per_sample",
    "locality_guidance",
    "non_target_indices",
    "pool_to_smaller",
    "resize_to_larger",
    "similarity_map",
    "standardize_logits",
]
