"""Callbacks: :class:`LogitStatistics` logs the logit range and spread the paper is about;
:class:`FitResult` writes a fit's headline numbers to a file (for sweeps); :class:`RandomStateCheckpoint` saves the
random states in checkpoints, so a resumed run continues the same random stream; :class:`PredictionWriter` writes
``predictions.csv``; :class:`RunStatus` writes a fit's ``status.json``; :class:`RunProgressBar` and
:class:`ModelSummaryTable` are what the CLI prints; :class:`RecordData` writes the data's class count and normalization
into checkpoints (for ``export-student``); :class:`EpochLine` prints one line per epoch (the demo's output)."""

from lightning_kd.callbacks.console import ModelSummaryTable, RunProgressBar
from lightning_kd.callbacks.epoch_line import EpochLine
from lightning_kd.callbacks.fit_result import FitResult
from lightning_kd.callbacks.logit_statistics import LogitStatistics, per_sample_stats
from lightning_kd.callbacks.prediction_writer import PredictionWriter, read_predictions
from lightning_kd.callbacks.record_data import RecordData
from lightning_kd.callbacks.rng_state import RandomStateCheckpoint
from lightning_kd.callbacks.run_config import LogRunConfig, run_settings
from lightning_kd.callbacks.run_status import RunStatus, read_status

__all__ = [
    "EpochLine",
    "FitResult",
    "LogRunConfig",
    "LogitStatistics",
    "ModelSummaryTable",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "RecordData",
    "RunProgressBar",
    "RunStatus",
    "per_sample_stats",
    "read_predictions",
    "read_status",
    "run_settings",
]
