"""The ``lightning-kd`` command line.

``fit``, ``validate``, ``test`` and ``predict`` run :class:`~lightning_kd.apps.cli_app.KDLightningCLI` (a LightningCLI
whose model and data are chosen by ``class_path`` in YAML configs); ``export-student`` and ``summarize`` are small
tools dispatched here, before any Lightning parser is built.

This module imports nothing heavy at import time: ``lightning-kd --help`` and the tools do not pay for building the
Trainer's argument parser (seconds on a small CPU).

Examples::

    lightning-kd fit --config configs/demo/kd_ls.yaml
    lightning-kd test --config configs/demo/kd_ls.yaml --ckpt_path runs/demo/kd_ls/latest/checkpoints/best.ckpt
    lightning-kd export-student runs/demo/kd_ls/latest/checkpoints/best.ckpt resnet8.safetensors
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: environment variable that turns on full tracebacks for project errors (as ``--debug`` does)
DEBUG_ENV = "LIGHTNING_KD_DEBUG"
#: the LightningCLI subcommands (Trainer methods)
TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: subcommands handled by plain tools: name -> (module, one-line description); each module has ``main(argv) -> int``
TOOLS = {
    "export-student": (
        "lightning_kd.apps.export",
        "write a checkpoint's student alone (state dict or .safetensors) with a JSON description",
    ),
    "summarize": ("lightning_kd.apps.summarize", "mean ± std of best/last top-1 over the logged metrics of runs"),
    "cache-teacher": (
        "lightning_kd.apps.cache_teacher",
        "compute a preset's teacher logits for every training view once, for --model.init_args.teacher_cache",
    ),
}

DESCRIPTION = """\
lightning-kd: knowledge distillation for image classifiers with PyTorch Lightning (KD, DKD, MLKD, CTKD, each with
logit standardization). Models, losses and data are chosen by class_path in YAML configs (see configs/).

Each `fit` writes a new run folder runs/<group>/<name>/version_N/ (config.yaml, metrics.csv, hparams.yaml,
checkpoints/best.ckpt and last.ckpt); runs/<group>/<name>/latest links to the newest fit. `validate`, `test` and
`predict` of a checkpoint inside a run folder write to version_N/<subcommand>_K/ beside it, never over it.
With --ckpt_path, the config and the command line decide every setting (later --config files and later flags win);
the checkpoint provides only the weights and the training state. No teacher file is needed to evaluate a student."""

EPILOG = """\
example:
  lightning-kd fit --config configs/demo/teacher.yaml      # the teacher the demo students distil from
  lightning-kd fit --config configs/demo/kd_ls.yaml --trainer.max_epochs 5
  lightning-kd test --config configs/demo/kd_ls.yaml --ckpt_path runs/demo/kd_ls/latest/checkpoints/best.ckpt

Project errors are printed as one message (exit code 2); add --debug or set LIGHTNING_KD_DEBUG=1 for the
traceback. `lightning-kd SUBCOMMAND --help` lists a subcommand's options."""

#: exceptions that, raised by this package's code, are a user's configuration error and not a bug
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
_PACKAGE_DIR = Path(__file__).resolve().parent


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-kd`` console script and of ``python -m lightning_kd``.

    Args:
        args: the command line without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 2 for a project error (printed as one message on stderr), 143 when a run
        was stopped by SIGTERM (128 + 15, as a shell reports it). Parser errors and
        ``--help`` exit through ``SystemExit`` as usual.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        return 0
    try:
        if argv[0] in TOOLS:
            return _tool(argv[0])(argv[1:])
        if argv[0] in TRAINER_SUBCOMMANDS:
            check_before_setup(argv[1:])
        from lightning_kd.apps.cli_app import run_cli

        if args is None:
            sys.argv[1:] = argv  # without --debug; Lightning reads sys.argv itself when not given `args`
        run_cli(None if args is None else argv)
        return 0
    except SystemExit as err:
        if not _is_sigterm(err):
            raise
        # Lightning stops after the current batch and exits "successfully": tell the scheduler it was interrupted
        print(
            "lightning-kd: stopped by SIGTERM; resume with `lightning-kd fit --config ... --ckpt_path "
            "<run folder>/checkpoints/last.ckpt`",
            file=sys.stderr,
        )
        return 143
    except Exception as err:
        message = project_error(err)
        if message is None or debug:
            raise
        print(f"lightning-kd: error: {message}", file=sys.stderr)
        print(f"(add --debug or set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 2


def check_before_setup(argv: list[str]) -> None:
    """Checks that need no parser, run before the slow set-up: the ``--ckpt_path`` file and the YAML of each config.

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        ValueError: the checkpoint is truncated or not a checkpoint; a ``--config`` file is not valid YAML (the
            message names the file, the line and the column).
    """
    from lightning_kd._checkpoint_file import check_checkpoint_file, ckpt_path_in_argv, is_checkpoint_file_name

    ckpt_path = ckpt_path_in_argv(argv)
    if is_checkpoint_file_name(ckpt_path):
        check_checkpoint_file(ckpt_path)
    for path in _config_files(argv):
        check_yaml_file(path)


def _config_files(argv: list[str]) -> list[Path]:
    files = []
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        # jsonargparse also takes the YAML text itself: only paths of existing files are checked here
        if value is not None and "\n" not in value and Path(value).is_file():
            files.append(Path(value))
    return files


def check_yaml_file(path: Path) -> None:
    """Raise a ``ValueError`` naming ``path``, the line and the column when the file is not valid YAML."""
    import yaml

    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"--config {path}: not valid YAML{where}: {problem}.") from None


def _is_sigterm(err: SystemExit) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(err, SIGTERMException)


def top_level_help() -> str:
    """The text of ``lightning-kd --help``: what the tool does, its subcommands, one example."""
    width = max(len(name) for name in (*TRAINER_SUBCOMMANDS, *TOOLS))
    trainer = {
        "fit": "train a model (a new versioned run folder each time)",
        "validate": "evaluate on the validation split",
        "test": "evaluate on the test split",
        "predict": "write the model's predictions",
    }
    lines = [
        f"usage: lightning-kd [-h] [--debug] {{{','.join((*TRAINER_SUBCOMMANDS, *TOOLS))}}} ...",
        "",
        DESCRIPTION,
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {trainer[name]}" for name in TRAINER_SUBCOMMANDS),
        *(f"  {name:<{width}}  {text}" for name, (_, text) in TOOLS.items()),
        "",
        "options:",
        "  -h, --help  show this help message and exit",
        f"  --debug     show the full traceback of project errors (also: {DEBUG_ENV}=1)",
        "",
        EPILOG,
    ]
    return "\n".join(lines)


def project_error(err: BaseException) -> str | None:
    """The message of the user-facing error behind ``err``, or ``None`` for anything else (a bug, an interrupt).

    A ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` is a project error when it was raised in this
    package's code; the whole chain of causes and contexts is searched. jsonargparse turns an error raised while it
    instantiates a ``class_path`` inside a union type (``teacher: str | nn.Module``) into "Does not validate against
    any of the Union subtypes" and keeps only the original's text: that text is dug out of its error list.
    """
    seen: set[int] = set()
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        pending += [current.__cause__, current.__context__]
    for current in chain:
        if isinstance(current, _USER_ERRORS) and _raised_in_package(current):
            return str(current)
    for current in chain:
        if isinstance(current, ValueError) and str(current).startswith(_UNION_ERROR):
            causes = _union_causes(str(current))
            if causes:
                return "; ".join(causes)
    return None


_UNION_ERROR = "Does not validate against any of the Union subtypes"
# the lines of a jsonargparse union error that are jsonargparse's own words, not the wrapped error's
_JSONARGPARSE_PHRASES = (
    "Expected a ",
    "Does not validate",
    "Not a valid subclass",
    "Problem with given class_path",
    "Import path",
    "Given value",
    "Subtypes:",
    "Errors:",
    "Got value",
    "Type <",
    "No action for",
    "Not a valid",
)


def _union_causes(message: str) -> list[str]:
    causes = []
    for line in message.splitlines():
        text = line.strip()
        if text.startswith("- "):
            text = text[2:]
            if text and not text.startswith(_JSONARGPARSE_PHRASES) and text not in causes:
                causes.append(text)
    return causes


def _raised_in_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE_DIR)


def _tool(name: str) -> Callable[[list[str]], int]:
    module_name = TOOLS[name][0]
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise FileNotFoundError(
            f"`lightning-kd {name}` needs {module_name}, which this install does not have."
        ) from err
    return module.main


def __getattr__(name: str) -> Any:
    # `from lightning_kd.cli import KDLightningCLI` keeps working without importing Lightning for every command
    if name == "KDLightningCLI":
        from lightning_kd.apps.cli_app import KDLightningCLI

        return KDLightningCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
