"""The one hyperparameter record of a module: built once, saved in checkpoints, sent to loggers, reloaded.

A module's constructor arguments include objects (networks, a loss, optimizer factories) that are no primitives.
The record describes each one with primitives only, flattened with a dotted prefix (``loss.class_path``,
``loss.kd_weight``, ``optimizer.class_path``, ``optimizer.lr``, ...), so that

* a checkpoint reloads under ``torch.load(weights_only=True)``;
* ``hparams_initial`` (what Lightning hands to loggers) is the whole truth of the run, for modules built in Python
  and by the CLI alike;
* :func:`init_kwargs_from_record` rebuilds the constructor arguments for ``load_from_checkpoint``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lightning_kd.models.external import TIMM_PREFIX, TORCHVISION_PREFIX

Primitive = bool | int | float | str | None
_PRIMITIVES = (bool, int, float, str, type(None))


def is_primitive(value: Any) -> bool:
    """Whether ``value`` is a primitive, or a list/tuple/dict made of primitives only."""
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_primitive(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_primitive(v) for k, v in value.items())
    return False


def _primitive(value: Any) -> Any:
    return [_primitive(v) for v in value] if isinstance(value, tuple) else value


def class_path(obj: Any) -> str:
    """The import path of a class or function (``torch.optim.sgd.SGD``)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def describe_network(role: str, spec: nn.Module | str) -> dict[str, Any]:
    """``{role: name}`` for a network given by name, ``{role_class: class path}`` for a given module."""
    if isinstance(spec, str):
        return {role: spec}
    return {f"{role}_class": class_path(type(spec))}


def describe_factory(prefix: str, factory: Callable[..., Any] | None) -> dict[str, Any]:
    """Describe an optimizer / scheduler factory as ``{prefix.class_path: ..., prefix.<arg>: ...}``.

    Understands the three shapes factories take here: a plain function (``lightning_kd.optim.cifar_sgd``), a
    ``functools.partial`` of a class (``partial(SGD, lr=0.1)``) and the partial that LightningCLI / jsonargparse
    builds from ``class_path`` + ``init_args`` (the class is among its positional arguments). Anything else (a
    lambda, a callable object) is recorded by its class path with ``prefix.reloadable = False``.
    """
    if factory is None:
        return {prefix: None}
    target: Any = factory
    kwargs: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        classes = [a for a in factory.args if isinstance(a, type)]
        target = classes[-1] if classes else factory.func
        kwargs = {k: _primitive(v) for k, v in factory.keywords.items() if is_primitive(v)}
    record: dict[str, Any] = {f"{prefix}.class_path": class_path(target) if callable(target) else repr(target)}
    if "<lambda>" in record[f"{prefix}.class_path"] or "<locals>" in record[f"{prefix}.class_path"]:
        record[f"{prefix}.reloadable"] = False
    record.update({f"{prefix}.{k}": v for k, v in kwargs.items()})
    return record


def absolute_weights_path(weights: str | None) -> str | None:
    """An existing or intended checkpoint path made absolute; library specs (``torchvision:...``) unchanged.

    Saved settings then do not depend on the folder a run was started from.
    """
    if weights is None or weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
        return weights
    return str(Path(weights).expanduser().resolve())


def subclass_init_args(obj: Any, frame: Any, known: set[str]) -> dict[str, Any]:
    """Primitive constructor arguments of subclasses of ``obj``'s base, not already in ``known``.

    Walks the ``__init__`` frames above ``frame`` (the same walk Lightning's ``save_hyperparameters`` does), so a
    subclass's own arguments (``extra_weight: float = 0.1``) land in the record and ``load_from_checkpoint`` passes
    them back.
    """
    from lightning.pytorch.utilities.parsing import collect_init_args

    extras: dict[str, Any] = {}
    for local_args in collect_init_args(frame, [], classes=(type(obj),)):
        for key, value in local_args.items():
            if key not in known and is_primitive(value):
                extras[key] = _primitive(value)
    return extras


def _import(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"Cannot import {path!r} recorded in the checkpoint: {err}") from err


def _prefixed(record: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    head = f"{prefix}."
    return {k[len(head) :]: v for k, v in record.items() if k.startswith(head)}


def rebuild_factory(record: Mapping[str, Any], prefix: str) -> Callable[..., Any] | None:
    """Rebuild an optimizer / scheduler factory described by :func:`describe_factory`."""
    if prefix in record and record[prefix] is None:
        return None
    fields = _prefixed(record, prefix)
    path = fields.pop("class_path", None)
    if path is None:
        raise KeyError(prefix)
    if fields.pop("reloadable", True) is False:
        raise ValueError(
            f"The checkpoint's {prefix} was a {path!r}, which cannot be rebuilt from its record: pass {prefix}=... "
            "to load_from_checkpoint."
        )
    target = _import(path)
    return functools.partial(target, **fields) if fields or isinstance(target, type) else target


def rebuild_loss(record: Mapping[str, Any]) -> nn.Module:
    """Rebuild the loss strategy from its ``loss.class_path`` and ``loss.<arg>`` entries."""
    fields = _prefixed(record, "loss")
    path = fields.pop("class_path")
    return _import(path)(**fields)


def _init_parameters(cls: type) -> set[str]:
    """Named constructor parameters of ``cls`` and of the bases it forwards ``**kwargs`` to (this project's and
    users' classes, up to Lightning's own)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith(("lightning.", "torch.")):
            break
        if "__init__" in vars(klass):
            for param in inspect.signature(klass.__init__).parameters.values():
                if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and param.name != "self":
                    names.add(param.name)
    return names


def init_kwargs_from_record(
    cls: type, record: Mapping[str, Any], overrides: Mapping[str, Any], objects: tuple[str, ...]
) -> dict[str, Any]:
    """Constructor keyword arguments of ``cls`` rebuilt from a record; ``overrides`` win.

    Args:
        cls: the module class being loaded (a subclass may add arguments).
        record: the checkpoint's ``hyper_parameters``.
        overrides: keyword arguments the caller passed to ``load_from_checkpoint``.
        objects: the network arguments of ``cls`` (recorded as ``<arg>`` for a name, ``<arg>_class`` for a module).

    Raises:
        ValueError: a network was given as a module when the checkpoint was made and is not in ``overrides``; the
            message names the argument to pass.
    """
    params = _init_parameters(cls)
    kwargs: dict[str, Any] = {k: v for k, v in record.items() if k in params and k not in objects}
    for arg in objects:
        if arg in overrides:
            continue
        if arg in record:
            kwargs[arg] = record[arg]
        elif f"{arg}_class" in record:
            raise ValueError(
                f"This checkpoint's {arg} was given as a module ({record[f'{arg}_class']}), which a checkpoint does "
                f"not rebuild: pass it, e.g. {cls.__name__}.load_from_checkpoint(path, {arg}=<the {arg} network>)."
            )
    if "loss" in params and "loss" not in overrides and "loss.class_path" in record:
        kwargs["loss"] = rebuild_loss(record)
    for prefix in ("optimizer", "lr_scheduler"):
        if prefix in params and prefix not in overrides and (prefix in record or f"{prefix}.class_path" in record):
            kwargs[prefix] = rebuild_factory(record, prefix)
    kwargs.update(overrides)
    return kwargs
