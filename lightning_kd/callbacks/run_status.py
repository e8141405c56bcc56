"""The outcome of a fit, in its run folder: ``status.json`` (:class:`RunStatus`)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

#: the file, in the run folder, that says how a fit ended
STATUS_FILE = "status.json"
#: what a run folder holds when the run wrote nothing but its settings (the CLI's config, the logger's hparams)
_SETTINGS_ONLY = {"config.yaml", "hparams.yaml"}


def read_status(run: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json`` as a dict (``{"status": "running" | "finished" | "failed", ...}``), or ``None``."""
    path = Path(run) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunStatus(Callback):
    """Write ``status.json`` in the fit's log folder: ``running`` at the start, ``finished`` or ``failed`` at the end.

    A fit that fails on a configuration error before it wrote anything but its settings (``config.yaml``,
    ``hparams.yaml``) leaves no run folder behind: it is removed. A fit that fails later (a crash in an epoch, a
    non-finite loss) keeps its folder, checkpoints and logs, and its status says ``failed`` with the error's first
    line, which ``lightning-kd summarize`` reports. Only rank zero writes.

    Args:
        is_configuration_error: tells configuration errors (the user's to fix before anything ran) from crashes;
            the CLI passes its own rule (:func:`lightning_kd.cli.project_error`).
    """

    def __init__(self, is_configuration_error: Any = None) -> None:
        self.is_configuration_error = is_configuration_error or (lambda err: False)
        self.folder: Path | None = None

    def _folder(self, trainer: Trainer) -> Path | None:
        # the logger's own folder: `trainer.log_dir` is a collective call under DDP
        logger = trainer.loggers[0] if trainer.loggers else None
        log_dir = getattr(logger, "log_dir", None)
        return Path(log_dir) if log_dir else None

    def _write(self, status: str, **extra: Any) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"status": status, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
        (self.folder / STATUS_FILE).write_text(json.dumps(record, indent=2) + "\n")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        self.folder = self._folder(trainer)
        self._write("running")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and not trainer.interrupted:
            self._write("finished", epochs=trainer.current_epoch, global_step=trainer.global_step)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero or self.folder is None or trainer.state.fn != "fit":
            return
        if self.is_configuration_error(exception) and self._holds_settings_only():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            return
        first_line = (str(exception).strip().splitlines() or [""])[0]
        self._write(
            "failed",
            error=f"{type(exception).__name__}: {first_line}",
            epoch=trainer.current_epoch,
            global_step=trainer.global_step,
        )

    def _holds_settings_only(self) -> bool:
        assert self.folder is not None
        if not self.folder.is_dir():
            return True
        names = {p.name for p in self.folder.iterdir()} - {STATUS_FILE}
        return names <= _SETTINGS_ONLY
