"""A validation-time monitor of the teacher's and the student's logit statistics (the paper's Figs. 1 and 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor
from typing_extensions import override

from lightning_kd.contracts import MonitoredTemperature, TeacherInValidation

#: layout of the running-sum vector kept on the device
_MEAN_SUM, _MEAN_SQ, _STD_SUM, _STD_SQ = 0, 1, 2, 3  # per role, offset by _ROLE_OFFSET[role]
_ROLE_OFFSET = {"student": 0, "teacher": 4}
_STUDENT_COUNT, _TEACHER_COUNT, _AGREE = 8, 9, 10
_NUM_SUMS = 11


def per_sample_stats(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample mean and unbiased standard deviation over the classes, in fp32.

    The std divides by ``K - 1`` (Bessel), as the z-score of :func:`~lightning_kd.losses.standardize_logits`.

    Args:
        logits: ``(B, K)`` logits.

    Returns:
        ``(mean, std)``, each of shape ``(B,)``.
    """
    x = logits.detach().float()
    return x.mean(dim=-1), x.std(dim=-1)


def _mean_and_spread(total: Tensor, total_sq: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased standard deviation of a quantity from its sum, sum of squares and count."""
    mean = total / count
    # clamp: rounding can make the variance of (nearly) equal values slightly negative
    var = ((total_sq - count * mean * mean) / (count - 1)).clamp_min(0.0)
    return mean, var.sqrt()


class LogitStatistics(Callback):
    r"""Log the range and spread of the teacher's and the student's logits once per validation epoch.

    *Logit Standardization in Knowledge Distillation* (Sun et al., CVPR 2024, arXiv:2403.01427) argues that a
    temperature shared by teacher and student forces the student to copy the teacher's logit mean and standard
    deviation, and that z-scoring each sample's logits (LS) frees it from that. This callback shows the effect
    while training: for every validation sample :math:`i` with logits :math:`x_i \in \mathbb{R}^K` it takes
    :math:`\mu_i = \mathrm{mean}_k\, x_{ik}` and :math:`\sigma_i = \mathrm{std}_k\, x_{ik}` (unbiased, like the
    z-score) and logs, for ``<role>`` in ``student`` and ``teacher``:

    - ``logits/<role>_mean``, ``logits/<role>_std``: :math:`\mu_i` and :math:`\sigma_i` averaged over samples;
    - ``logits/<role>_mean_spread``, ``logits/<role>_std_spread``: their (unbiased) standard deviation across
      samples;
    - ``logits/agreement``: the fraction of samples on which the teacher's and the student's top-1 agree;
    - ``logits/<role>_temperature`` and ``logits/<role>_temperature_spread``, only when the module's loss
      standardizes (``loss.standardize`` is true) and has a base temperature (``loss.temperature``, or CTKD's
      learned ``loss.current_temperature()``): the effective per-sample
      temperature :math:`\tau\,\sigma_i` (base temperature times the sample's std), averaged over samples, and
      its spread;
    - histograms of :math:`\mu_i`, :math:`\sigma_i` (and :math:`\tau\sigma_i`) under the same names with the
      prefix ``logits_hist/``, for loggers that support them (:class:`~lightning.pytorch.loggers.WandbLogger`,
      :class:`~lightning.pytorch.loggers.TensorBoardLogger`), from a bounded sample of the first
      ``histogram_samples`` validation samples of the global-zero process.

    It uses the logits the validation pass already computes: the module's ``validation_step`` returns
    ``{"student_logits": (B, K), "teacher_logits": (B, K) or None, "targets": (B,)}``
    (:class:`~lightning_kd.DistillationModule` does), and :meth:`setup` sets the module's
    ``teacher_in_validation`` to ``True`` so that the teacher's logits are there at every epoch. Nothing runs in
    training steps. Per batch it only adds to a vector of running sums on the device (sums, sums of squares,
    counts); at the end of the epoch the vector is summed across processes with the strategy's ``reduce`` and
    turned into the logged numbers, so the values are those of the whole validation set on any number of
    devices. The sanity-check pass is skipped.

    Args:
        histogram_samples: how many per-sample values each histogram holds at most (0: no histograms).

    Raises:
        ValueError: for a negative ``histogram_samples``.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_kd.callbacks import LogitStatistics
        >>> trainer = pl.Trainer(callbacks=[LogitStatistics()], logger=False)  # then trainer.fit(module, ...)
    """

    def __init__(self, histogram_samples: int = 2048) -> None:
        super().__init__()
        if not isinstance(histogram_samples, int) or histogram_samples < 0:
            raise ValueError(f"histogram_samples must be an integer >= 0, got {histogram_samples!r}.")
        self.histogram_samples = histogram_samples
        self._sums: Tensor | None = None
        self._samples: dict[str, list[Tensor]] = {}
        self._num_sampled = 0

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # ask the module for the teacher's logits at every validation epoch, not only the first
        if isinstance(pl_module, TeacherInValidation):
            pl_module.teacher_in_validation = True

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums = None
        self._samples = {}
        self._num_sampled = 0

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking:
            return
        student, teacher = _logits_from_outputs(outputs, pl_module)
        self.update(student, teacher)

    def update(self, student_logits: Tensor, teacher_logits: Tensor | None) -> None:
        """Add one batch of logits to the running sums (on their device; no host synchronization).

        Args:
            student_logits: ``(B, K)`` student logits.
            teacher_logits: ``(B, K)`` teacher logits, or ``None`` when the teacher did not run.
        """
        if self._sums is None:
            # float64 sums: the sum-of-squares form of the variance loses digits in fp32 over large validation sets
            # (MPS has no float64)
            dtype = torch.float32 if student_logits.device.type == "mps" else torch.float64
            self._sums = torch.zeros(_NUM_SUMS, dtype=dtype, device=student_logits.device)
        sums = self._sums
        per_sample: dict[str, Tensor] = {}
        roles = (
            {"student": student_logits}
            if teacher_logits is None
            else {"student": student_logits, "teacher": teacher_logits}
        )
        for role, logits in roles.items():
            mean, std = per_sample_stats(logits)
            offset = _ROLE_OFFSET[role]
            stats = torch.stack([mean.sum(), (mean * mean).sum(), std.sum(), (std * std).sum()]).to(sums.dtype)
            sums[offset : offset + 4] += stats
            per_sample[f"{role}_mean"], per_sample[f"{role}_std"] = mean, std
        n = student_logits.shape[0]
        sums[_STUDENT_COUNT] += n
        if teacher_logits is not None:
            sums[_TEACHER_COUNT] += n
            agree = (student_logits.argmax(dim=-1) == teacher_logits.argmax(dim=-1)).sum()
            sums[_AGREE] += agree.to(sums.dtype)
        self._keep_sample(per_sample, n)

    def _keep_sample(self, per_sample: dict[str, Tensor], n: int) -> None:
        take = min(n, self.histogram_samples - self._num_sampled)
        if take <= 0:
            return
        for name, values in per_sample.items():
            self._samples.setdefault(name, []).append(values[:take])
        self._num_sampled += take

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._sums is None:
            return
        sums = trainer.strategy.reduce(self._sums, reduce_op="sum")
        metrics = self.compute(sums, _base_temperature(pl_module))
        # Already reduced across processes, so equal on all of them. sync_dist=True silences Lightning's warning; the
        # mean it takes over equal values costs one scalar collective per value at the epoch's end.
        pl_module.log_dict({name: value.float() for name, value in metrics.items()}, sync_dist=True)
        if trainer.is_global_zero and self._samples:
            self._log_histograms(trainer, _base_temperature(pl_module))

    @staticmethod
    def compute(sums: Tensor, base_temperature: float | None) -> dict[str, Tensor]:
        """Turn a (reduced) running-sum vector into the logged statistics (see the class docstring for names)."""
        metrics: dict[str, Tensor] = {}
        for role, count_index in (("student", _STUDENT_COUNT), ("teacher", _TEACHER_COUNT)):
            count = sums[count_index]
            if count < 2:  # no teacher logits this epoch (or a single sample: no spread)
                continue
            o = _ROLE_OFFSET[role]
            mean, mean_spread = _mean_and_spread(sums[o + _MEAN_SUM], sums[o + _MEAN_SQ], count)
            std, std_spread = _mean_and_spread(sums[o + _STD_SUM], sums[o + _STD_SQ], count)
            metrics.update(
                {
                    f"logits/{role}_mean": mean,
                    f"logits/{role}_mean_spread": mean_spread,
                    f"logits/{role}_std": std,
                    f"logits/{role}_std_spread": std_spread,
                }
            )
            if base_temperature is not None:
                metrics[f"logits/{role}_temperature"] = base_temperature * std
                metrics[f"logits/{role}_temperature_spread"] = base_temperature * std_spread
        if sums[_TEACHER_COUNT] > 0:
            metrics["logits/agreement"] = sums[_AGREE] / sums[_TEACHER_COUNT]
        return metrics

    def _log_histograms(self, trainer: pl.Trainer, base_temperature: float | None) -> None:
        values = {name: torch.cat(parts).cpu() for name, parts in self._samples.items()}
        if base_temperature is not None:
            for role in ("student", "teacher"):
                if f"{role}_std" in values:
                    values[f"{role}_temperature"] = base_temperature * values[f"{role}_std"]
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb  # optional dependency, present whenever a WandbLogger exists

                logger.log_metrics({f"logits_hist/{k}": wandb.Histogram(v.numpy()) for k, v in values.items()}, step)
            elif isinstance(logger, TensorBoardLogger):
                for name, v in values.items():
                    logger.experiment.add_histogram(f"logits_hist/{name}", v, global_step=step)


def _logits_from_outputs(outputs: Any, pl_module: pl.LightningModule) -> tuple[Tensor, Tensor | None]:
    """The ``(student, teacher)`` logits of a validation step's output, checked."""
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("student_logits"), Tensor):
        raise TypeError(
            f"LogitStatistics needs the module's validation_step to return a dict with 'student_logits' (and "
            f"'teacher_logits'), as lightning_kd.DistillationModule does; {type(pl_module).__name__}.validation_step "
            f"returned {type(outputs).__name__}."
        )
    student = outputs["student_logits"]
    teacher = outputs.get("teacher_logits")
    if student.ndim != 2 or (teacher is not None and teacher.shape != student.shape):
        raise ValueError(
            "LogitStatistics expects (batch, classes) student and teacher logits of the same shape, got "
            f"{tuple(student.shape)} and {None if teacher is None else tuple(teacher.shape)}."
        )
    return student, teacher


def _base_temperature(pl_module: pl.LightningModule) -> float | None:
    """The loss's base temperature when it standardizes logits (LS), else ``None``.

    A fixed ``loss.temperature`` (KD, DKD, MLKD), or the current learned one, ``loss.current_temperature()`` (CTKD).
    """
    loss = getattr(pl_module, "loss", None)
    if not getattr(loss, "standardize", False):
        return None
    temperature = loss.monitored_temperature() if isinstance(loss, MonitoredTemperature) else None
    if isinstance(temperature, Tensor) and temperature.numel() == 1:
        return float(temperature.detach())  # epoch end, not a training step: the host sync is fine
    return float(temperature) if isinstance(temperature, (int, float)) else None
