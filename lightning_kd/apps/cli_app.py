"""The LightningCLI behind ``lightning-kd fit|validate|test|predict`` (entry point: :mod:`lightning_kd.cli`).

On top of Lightning's CLI:

* ``data.num_classes`` is linked into the model, so networks given by name are built for the data's classes;
* run folders (:mod:`lightning_kd.apps.run_folders`): every ``fit`` gets a new versioned folder and updates ``latest``;
  ``validate`` / ``test`` / ``predict`` of a checkpoint inside a run folder log to ``<run>/<stage>_K/``;
* with ``--ckpt_path`` the given config and command line are the whole truth; the checkpoint provides weights
  and training state only (Lightning would merge the checkpoint's saved settings over the command line); only
  when no model is configured at all is it rebuilt from the checkpoint's record
  (:mod:`lightning_kd.apps.model_from_checkpoint`);
* the top-level ``--optimizer`` / ``--lr_scheduler`` are routed into ``model.init_args.optimizer`` /
  ``model.init_args.lr_scheduler``, so they only ever see the module's trainable parameters;
* a rich progress bar (unless the config turns the progress bar off) and a one-line summary after ``fit``;
* checkpoints record the data's class count and normalization (read back by ``lightning-kd export-student``).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override

# imported so that their classes resolve by short name in configs (DistillationModule, DigitsDataModule, KD, ...)
import lightning_kd.data
import lightning_kd.losses
import lightning_kd.module  # noqa: F401
from lightning_kd._checkpoint_file import check_checkpoint_file, is_checkpoint_file_name
from lightning_kd.apps.cli_parser import KDArgumentParser
from lightning_kd.apps.model_from_checkpoint import with_model_from_checkpoint
from lightning_kd.apps.run_folders import find_run_folder, next_stage_folder, update_latest
from lightning_kd.callbacks.console import ModelSummaryTable, RunProgressBar
from lightning_kd.callbacks.prediction_writer import PredictionWriter
from lightning_kd.callbacks.record_data import RecordData
from lightning_kd.callbacks.run_config import LogRunConfig
from lightning_kd.callbacks.run_status import RunStatus

#: checkpoint key under which the CLI records the data the model was trained on (class count, normalization)

_PRECEDENCE = (
    "Settings come from --config files and flags, later ones winning; with --ckpt_path the checkpoint supplies "
    "only the weights and the training state, never settings (only when no model is configured at all is the model "
    "rebuilt from the checkpoint's record)."
)
_FIT_INTRO = (
    "lightning-kd fit trains a student from a frozen teacher. The model is a lightning_kd.DistillationModule: "
    "--model.init_args.student and .teacher (a zoo name such as resnet8x4, 'torchvision/...', 'timm/...', or a "
    "module), .teacher_weights (the teacher's trained checkpoint; fit refuses to start without it), and .loss, the "
    "distillation objective (lightning_kd.losses.KD, DKD, MLKD or CTKD; standardize: true adds the paper's z-score "
    "logit standardization). Presets for every pair and method of the paper are in configs/cifar100/<method>/ and "
    "configs/imagenet/; configs/demo/ runs on a CPU in minutes. Example: lightning-kd fit --config "
    "configs/demo/kd_ls.yaml --trainer.max_epochs 5. Lightning's own options follow. "
)
SUBCOMMAND_DESCRIPTIONS = {
    "fit": _FIT_INTRO + "Each run writes a new run folder runs/<group>/<name>/version_N/ (config.yaml, "
    "metrics.csv, hparams.yaml, checkpoints/best.ckpt and last.ckpt) and points runs/<group>/<name>/latest at it. "
    + _PRECEDENCE,
    "validate": "Evaluate on the validation split. A --ckpt_path inside a run folder logs to <run>/validate_K/. "
    + _PRECEDENCE,
    "test": "Evaluate on the test split. A --ckpt_path inside a run folder logs to <run>/test_K/; a distillation "
    "checkpoint needs no teacher file (teacher/* metrics are skipped). " + _PRECEDENCE,
    "predict": "Predict with the model and write predictions.csv (per sample: index, predicted class and its "
    "probability, top-5 classes and probabilities, target) into the log folder; a --ckpt_path inside a run folder "
    "logs to <run>/predict_K/. " + _PRECEDENCE,
}
# loggers whose folder is save_dir/name/version, the layout the run folders rely on
_FOLDER_LOGGERS = (CSVLogger, TensorBoardLogger)


class _DropLitLoggerTip(logging.Filter):
    """Lightning 2.6 advertises its cloud logger at every trainer start; a run's output should be about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        # tests/test_cli.py fails if the tip comes back under other words
        return "litlogger" not in record.getMessage()


def _quiet_lightning() -> None:
    """Silence the two messages every run printed that say nothing about it (see tests/test_cli.py)."""
    # Lightning 2.6's own use of a torch 2.14 deprecated name; nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in target.filters):
            target.addFilter(_DropLitLoggerTip())


class KDLightningCLI(LightningCLI):
    """LightningCLI for this project (see the module docstring for what it adds to Lightning's)."""

    _given_num_classes: int | None = None

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # the link above sets the model's num_classes from the data at instantiation, over a value the user gave
        given, data = self._given_num_classes, getattr(self.datamodule, "num_classes", None)
        if given is not None and data is not None and int(given) != int(data):
            raise ValueError(
                f"--model.init_args.num_classes {given} disagrees with the data: {type(self.datamodule).__name__} "
                f"has {data} classes. Drop num_classes (it is taken from the data) or configure data with {given}."
            )

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # `test --ckpt_path X` with no model configured at all: the model comes from X's record
        if args is None:
            sys.argv[1:] = with_model_from_checkpoint(sys.argv[1:])
        elif isinstance(args, list):
            args = with_model_from_checkpoint(args)
        super().parse_arguments(parser, args)

    @override
    def _parse_ckpt_path(self) -> None:
        # Private Lightning API, overridden on purpose (tests/test_cli.py fails loudly if Lightning renames it).
        # Lightning merges the checkpoint's hyperparameters over the parsed config here, so a command-line value
        # such as --model.init_args.teacher_weights was silently replaced by the checkpoint's. The module's
        # hyperparameters are one flat primitive record (`loss.temperature`, ...), no init arguments, and the
        # given config + command line are the whole truth: the checkpoint provides weights and state only.
        return

    @override
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _route_optimizer_arguments(config)
        model = config.get("model")
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        self._given_num_classes = init_args.get("num_classes") if isinstance(init_args, Namespace) else None
        ckpt_path = config.get("ckpt_path")
        if isinstance(ckpt_path, str) and is_checkpoint_file_name(ckpt_path):
            check_checkpoint_file(ckpt_path)  # given in a config file (the command line was checked before parsing)
        if rank_zero_only.rank != 0:
            # processes that a multi-device launcher started later: rank 0 owns the run folder and its checks
            # (here they would see the folder rank 0 is creating); their loggers write nothing
            return
        if self.subcommand == "fit":
            _refuse_used_run_folders(config)
        elif self.subcommand is not None and config.get("ckpt_path"):
            _log_beside_the_run(config, config.ckpt_path, self.subcommand)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = trainer_config.get("callbacks") or []
        callbacks = [*callbacks] if isinstance(callbacks, list) else [callbacks]
        callbacks.append(RecordData())
        if self.subcommand == "fit":
            callbacks.append(RunStatus(is_configuration_error=_is_configuration_error))
        if self.subcommand == "predict":
            callbacks.append(PredictionWriter())
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RunProgressBar())
        wants_summary = trainer_config.get("enable_model_summary") is not False
        if wants_summary and not any(isinstance(c, ModelSummary) for c in callbacks):
            callbacks.append(ModelSummaryTable())
            # the trainer would otherwise announce that it found a summary callback and skips its own
            kwargs["enable_model_summary"] = False
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def before_fit(self) -> None:
        """Start the wall clock of the summary line."""
        self._fit_start = time.perf_counter()

    def after_fit(self) -> None:
        """Point ``latest`` at this run's folder and print the one-line summary."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        # the logger's own folder: `trainer.log_dir` broadcasts under DDP, and the other ranks have returned above
        log_dir = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
        run = Path(log_dir) if log_dir else None
        versioned = bool(trainer.loggers) and isinstance(trainer.loggers[0], _FOLDER_LOGGERS)
        if run is not None and versioned and run.is_dir():
            update_latest(run)
        print(fit_summary(trainer, time.perf_counter() - self._fit_start, run), flush=True)


def fit_summary(trainer: Trainer, seconds: float, run: Path | None) -> str:
    """One line: best and last validation top-1 (percent), wall time, and where the run and checkpoints are."""
    metrics = trainer.callback_metrics

    def percent(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{100 * float(value):.2f}%"

    checkpoint = trainer.checkpoint_callback
    where = f"; run folder {run}" if run is not None else ""
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        where += f"; checkpoints in {checkpoint.dirpath}"
    return (
        f"fit finished: best val top-1 {percent('val/acc1_best')}, last {percent('val/acc1')}, "
        f"wall time {seconds:.1f} s{where}"
    )


def run_cli(args: list[str] | None) -> KDLightningCLI:
    """Parse ``args`` (``None``: ``sys.argv``), build the model, data and trainer, and run the subcommand."""
    _quiet_lightning()
    return KDLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=KDArgumentParser,
        save_config_callback=LogRunConfig,
        # a one-line usage: Lightning's would list every option (150 lines) before the description
        parser_kwargs={
            name: {
                "description": text,
                "usage": f"lightning-kd {name} [-h] [-c CONFIG] [--print_config] [--KEY VALUE ...]",
            }
            for name, text in SUBCOMMAND_DESCRIPTIONS.items()
        },
        args=args,
    )


def _is_configuration_error(err: BaseException) -> bool:
    from lightning_kd.cli import project_error

    return project_error(err) is not None


def _route_optimizer_arguments(config: Namespace) -> None:
    """Move the top-level ``optimizer`` / ``lr_scheduler`` into the model's own arguments.

    Lightning's CLI would hand them every parameter of the module (the frozen teacher's too) and drop the module's
    scheduler; routed, they reach the module's ``configure_optimizers``, which passes only the trainable
    parameters. A scheduler the config gives stays unless ``--lr_scheduler`` replaces it.
    """
    model = config.get("model")
    for key in ("optimizer", "lr_scheduler"):
        value = config.get(key)
        if value is None:
            continue
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        if init_args is None or key not in init_args:
            raise ValueError(
                f"--{key} is routed to --model.init_args.{key}, but the model has no `{key}` argument; configure "
                "the model's own optimizer instead."
            )
        init_args[key] = value
        config[key] = None


def _logger_entries(config: Namespace) -> list[tuple[Namespace, type]]:
    """The trainer's logger configs whose class writes to ``save_dir/name/version`` (CSV, TensorBoard)."""
    value = config.get("trainer", Namespace()).get("logger")
    entries = value if isinstance(value, list) else [value]
    found = []
    for entry in entries:
        if not isinstance(entry, Namespace) or not isinstance(entry.get("class_path"), str):
            continue
        module_name, _, name = entry.class_path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name, None)
        if isinstance(cls, type) and issubclass(cls, _FOLDER_LOGGERS):
            found.append((entry, cls))
    return found


def _refuse_used_run_folders(config: Namespace) -> None:
    """A fit whose logger names a fixed ``version`` must not write into an earlier run's folder."""
    for entry, _ in _logger_entries(config):
        init = entry.init_args
        version = init.get("version")
        if version is None:
            continue  # the logger picks the next free version_N
        folder = (
            Path(init.save_dir)
            / (init.get("name") or "")
            / (version if isinstance(version, str) else f"version_{version}")
        )
        if folder.is_dir() and any(folder.iterdir()):
            raise ValueError(
                f"The logger's run folder {folder} (version={version!r}) already holds a run; a fit never writes "
                "over an earlier run's record. Drop `version` (a new version_N folder is made) or choose a new one."
            )


def _log_beside_the_run(config: Namespace, ckpt_path: str, stage: str) -> None:
    """Point the folder loggers at ``<run>/<stage>_K/`` when the checkpoint lies inside a run folder."""
    run = find_run_folder(ckpt_path)
    if run is None:
        return  # the loggers make their own new version folder
    sub_folder = next_stage_folder(run, stage)
    trainer = config.get("trainer")
    if isinstance(trainer, Namespace) and not _logger_entries(config) and trainer.get("logger") in (None, True):
        # no logger configured (e.g. no --config): Lightning's default would write lightning_logs/version_N
        trainer.logger = Namespace(
            class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=".", name="", version=None)
        )
    for entry, _ in _logger_entries(config):
        entry.init_args.save_dir = str(run.parent.parent)
        entry.init_args.name = run.parent.name
        entry.init_args.version = f"{run.name}/{sub_folder}"
