"""Monitoring callbacks: :class:`LogitStatistics` logs the logit range and spread the paper is about."""

from lightning_kd.callbacks.logit_statistics import LogitStatistics, per_sample_stats

__all__ = ["LogitStatistics", "per_sample_stats"]
