"""Distillation losses: pure math in :mod:`.functional`, one strategy class per file."""

from lightning_kd.losses.base import DistillationLoss
from lightning_kd.losses.functional import kd_divergence, standardize_logits
from lightning_kd.losses.kd import KD

__all__ = ["KD", "DistillationLoss", "kd_divergence", "standardize_logits"]
