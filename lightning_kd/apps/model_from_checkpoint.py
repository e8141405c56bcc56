"""``validate`` / ``test`` / ``predict --ckpt_path X`` without any model config: the model comes from X's record.

A checkpoint's hyperparameters are the module's one flat primitive record (``student``, ``teacher``,
``loss.class_path``, ``loss.temperature``, ``optimizer.class_path``, ...). When the command line and the config
files name no model at all, that record is turned back into a ``--model`` config (``class_path`` + ``init_args``)
and put first, so that any flag still overrides it. Whenever a model is configured, the record is not read:
then the given config is the whole truth.

The record names no module class: :func:`lightning_kd._record.record_shape` tells (``student`` / ``teacher``: a
:class:`~lightning_kd.DistillationModule`, ``model``: a :class:`~lightning_kd.ClassificationModule`), and
:func:`lightning_kd._record.object_configs` decodes the loss, optimizer and scheduler, as for
``load_from_checkpoint``. A subclass, or networks that were given as modules, need a ``--model`` config.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_kd._record import object_configs, record_shape

__all__ = ["model_config_from_record", "with_model_from_checkpoint"]

_EVALUATIONS = ("validate", "test", "predict")
# init arguments that are linked from the data (`data.num_classes`) and so may not be given
_LINKED = {"num_classes"}


def with_model_from_checkpoint(args: list[str]) -> list[str]:
    """``args`` with ``--model=<config from the checkpoint's record>`` inserted when no model is configured."""
    if not args or args[0] not in _EVALUATIONS:
        return args
    rest = args[1:]
    ckpt_path = _flag_value(rest, "--ckpt_path")
    if ckpt_path is None or any(a == "--model" or a.startswith(("--model=", "--model.")) for a in rest):
        return args
    configs = [_flag_value([a], "--config") or _flag_value([a], "-c") for a in rest]
    configs += [rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--config", "-c")]
    if any("model" in _load_yaml(path) for path in configs if path):
        return args
    if not Path(ckpt_path).is_file():
        return args  # Lightning reports the missing file
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    model = model_config_from_record(checkpoint.get("hyper_parameters") or {}, ckpt_path)
    return [args[0], f"--model={json.dumps(model)}", *rest]


def model_config_from_record(record: Mapping[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """The ``model`` config (``class_path`` + ``init_args``) that the flat record describes.

    Raises:
        ValueError: if the record describes no lightning_kd module, or networks given as modules (their class and
            arguments are not recorded): then pass ``--model`` / ``--config`` with the model.
    """
    shape = record_shape(record)
    given = [k for k in record if k.endswith("_class")]
    if shape is None or given:
        reason = (
            f"its networks were given as modules ({', '.join(given)})" if given else "it has no lightning_kd record"
        )
        raise ValueError(
            f"Cannot rebuild the model from {source}: {reason}. Give the model with --config (e.g. the run's "
            "config.yaml) or --model."
        )
    networks, class_path = shape
    from lightning_kd import ClassificationModule, DistillationModule

    module = DistillationModule if class_path.endswith("DistillationModule") else ClassificationModule
    params = set(inspect.signature(module.__init__).parameters) - {"self"} - _LINKED
    init_args: dict[str, Any] = {k: v for k, v in record.items() if k in params and "." not in k}
    hint = "give the model with --config or --model"
    init_args.update({k: v for k, v in object_configs(record, hint).items() if k in params})
    missing = [n for n in networks if n not in init_args]
    if missing:
        raise ValueError(f"Cannot rebuild the model from {source}: the record lacks {missing}.")
    return {"class_path": class_path, "init_args": init_args}


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _load_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}  # the parser reports a config it cannot read
    return data if isinstance(data, dict) else {}
