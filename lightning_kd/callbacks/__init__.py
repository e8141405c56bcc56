"""Callbacks: :class:`LogitStatistics` logs the logit range and spread the paper is about;
:class:`FitResult` writes a fit's headline numbers to a file (for sweeps); :class:`RandomStateCheckpoint` saves the
random states in checkpoints, so a resumed run continues the same random stream."""

from lightning_kd.callbacks.fit_result import FitResult
from lightning_kd.callbacks.logit_statistics import LogitStatistics, per_sample_stats
from lightning_kd.callbacks.rng_state import RandomStateCheckpoint

__all__ = ["FitResult", "LogitStatistics", "RandomStateCheckpoint", "per_sample_stats"]
