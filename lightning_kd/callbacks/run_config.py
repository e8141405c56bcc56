"""Give every logger the CLI run's data, trainer and seed settings, and a W&B run the run's ``config.yaml``.

The module's hyperparameter record (``student``, ``loss.temperature``, ``optimizer.lr``, ...) reaches the loggers
through Lightning; it says nothing of the batch size, the epochs or the seed. :class:`LogRunConfig` is the CLI's
``save_config_callback``: it writes ``config.yaml`` into the run folder as Lightning's
:class:`~lightning.pytorch.cli.SaveConfigCallback` does, and then, on rank zero, logs :func:`run_settings` of the
parsed config to every logger and copies the config file into a W&B run's folder (``files/lightning-kd/config.yaml``:
W&B keeps ``files/config.yaml`` for its own record), so an offline run holds it for ``wandb sync``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

__all__ = ["WANDB_CONFIG_PATH", "LogRunConfig", "run_settings"]

#: where :class:`LogRunConfig` puts the run's config file, relative to a W&B run's files folder (``run.dir``)
WANDB_CONFIG_PATH = Path("lightning-kd") / "config.yaml"
# the parts of a LightningCLI config that the module's record does not hold (the model, optimizer and scheduler are
# the module's arguments: the record has them)
_SECTIONS = ("data", "trainer")
_TOP_LEVEL = ("seed_everything", "ckpt_path")


def run_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The data, trainer and seed settings of a LightningCLI config, flat: ``data.batch_size``, ``trainer.max_epochs``.

    A ``class_path`` / ``init_args`` pair becomes ``<key>.class_path`` plus its arguments under ``<key>.`` (the
    ``init_args`` level dropped, as in the module's record: ``data.class_path``, ``data.batch_size``). Lists (the
    trainer's loggers and callbacks) stay lists, of the same flat form.

    Args:
        config: the subcommand's config as plain data (``yaml.safe_load`` of the parser's dump).

    Returns:
        ``seed_everything`` and ``ckpt_path`` (where the config has them), every ``data.*`` and ``trainer.*`` setting.
    """
    settings = {key: config[key] for key in _TOP_LEVEL if key in config}
    for section in _SECTIONS:
        value = config.get(section)
        if isinstance(value, Mapping):
            settings.update(_flatten(value, section))
        elif value is not None:
            settings[section] = _plain(value)
    return settings


def _flatten(value: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    items = dict(value)
    init_args = items.pop("init_args", None) if "class_path" in items else None
    for key, item in [*items.items(), *(init_args or {}).items()]:
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(item, Mapping):
            flat.update(_flatten(item, name))
        else:
            flat[name] = _plain(item)
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return _flatten(value, "")
    return value


class LogRunConfig(SaveConfigCallback):
    """The CLI's config callback: ``config.yaml`` in the run folder, the run's settings in every W&B logger.

    Lightning calls :meth:`save_config` once per run, on rank zero only, at setup (before the first step). The
    settings are logged with ``logger.log_hyperparams`` next to the module's record, so W&B's run config holds
    ``data.batch_size``, ``trainer.max_epochs``, ``seed_everything`` and the rest of :func:`run_settings`, and the
    run's ``config.yaml`` is saved among the W&B run's files (``lightning-kd/config.yaml``, also offline).
    """

    @override
    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        dumped = self.parser.dump(self.config, skip_none=False)
        settings = run_settings(yaml.safe_load(dumped))
        for logger in trainer.loggers:
            # W&B only: a folder logger (CSV, TensorBoard) has the whole config.yaml beside its metrics already, and
            # its hparams.yaml stays the module's record (what load_from_checkpoint reads)
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams(settings)
                self._save_to_wandb(logger, dumped)

    def _save_to_wandb(self, logger: WandbLogger, dumped: str) -> None:
        run = logger.experiment
        path = Path(run.dir) / WANDB_CONFIG_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumped)
        # recorded in the run's log: uploaded now online, by `wandb sync` offline
        run.save(str(path), base_path=run.dir, policy="now")
