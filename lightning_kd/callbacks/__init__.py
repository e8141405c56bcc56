"""Monitoring callbacks: :class:`LogitStatistics` logs the logit range and spread the paper is about;
:class:`FitResult` writes a fit's headline numbers to a file (for sweeps)."""

from lightning_kd.callbacks.fit_result import FitResult
from lightning_kd.callbacks.logit_statistics import LogitStatistics, per_sample_stats

__all__ = ["FitResult", "LogitStatistics", "per_sample_stats"]
