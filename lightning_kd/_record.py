"""The record codec: the one hyperparameter record of a module, encoded once and decoded in one place.

A module's constructor arguments include objects (networks, a loss, optimizer factories) that are no primitives.
The record describes each one with primitives only, flattened with a dotted prefix (``loss.class_path``,
``loss.kd_weight``, ``optimizer.class_path``, ``optimizer.lr``, ...), so that

* a checkpoint reloads under ``torch.load(weights_only=True)``;
* ``hparams_initial`` (what Lightning hands to loggers) is the whole truth of the run, for modules built in Python
  and by the CLI alike.

Encoding: :func:`describe_network`, :func:`describe_loss`, :func:`describe_factory`. Decoding, for every reader:
:func:`record_shape` (which module and networks a record describes), :func:`object_configs` (the loss, optimizer
and scheduler as ``class_path`` + ``init_args``), :func:`init_kwargs_from_record` (``load_from_checkpoint``, built
on the two). The CLI (``--ckpt_path`` without a model) and ``export-student`` read records through the same
functions, and :data:`DATA_RECORD_KEY` is the checkpoint key of the CLI's data record.
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

#: checkpoint key of the data record (class count, normalization) that the CLI's ``RecordData`` callback writes
DATA_RECORD_KEY = "lightning_kd_data"
#: prefixes of the constructor arguments that are objects described by ``<prefix>.class_path`` + ``<prefix>.<arg>``
OBJECT_PREFIXES = ("loss", "feature_loss", "optimizer", "lr_scheduler")
#: the object prefixes whose record rebuilds the object itself (the others are factories called later)
_BUILT_OBJECTS = ("loss", "feature_loss")
#: (network arguments, module class) per record shape: a record with ``student`` and ``teacher`` (each a name, or a
#: ``<arg>_class`` for a given module) is a DistillationModule's, one with ``model`` a ClassificationModule's
RECORD_SHAPES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("student", "teacher"), "lightning_kd.DistillationModule"),
    (("model",), "lightning_kd.ClassificationModule"),
)


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


def describe_loss(loss: Any, prefix: str = "loss") -> dict[str, Any]:
    """``{loss.class_path: ..., loss.<arg>: ...}`` from a loss strategy's :meth:`hparams_dict` (``None``: ``{prefix:
    None}``); ``prefix`` is the constructor argument (``loss``, ``feature_loss``)."""
    if loss is None:
        return {prefix: None}
    return {f"{prefix}.{k}": v for k, v in loss.hparams_dict().items()}


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
    # Lightning's own frame walk (what save_hyperparameters uses); undocumented, but no public API gives a
    # subclass's __init__ arguments from the base's __init__. tests/test_record_codec.py pins its behaviour, so an
    # upstream change fails there first.
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


def record_shape(record: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """The ``(network arguments, module class path)`` a record describes (see :data:`RECORD_SHAPES`), or ``None``.

    A network counts when it is recorded by name (``student``) or as a given module's class (``student_class``).
    """
    for networks, module in RECORD_SHAPES:
        if all(n in record or f"{n}_class" in record for n in networks):
            return networks, module
    return None


def object_configs(record: Mapping[str, Any], hint: str = "pass it again") -> dict[str, dict[str, Any] | None]:
    """The object arguments of a record as configs: ``{prefix: {"class_path": ..., "init_args": {...}}}``.

    A prefix recorded as ``None`` (no scheduler) maps to ``None``; a prefix not recorded at all is left out.

    Args:
        record: a module's flat record.
        hint: how the caller can supply an object the record cannot rebuild (said in the error).

    Raises:
        ValueError: an object was recorded as not reloadable (a lambda or local function); the message names it.
    """
    configs: dict[str, dict[str, Any] | None] = {}
    for prefix in OBJECT_PREFIXES:
        if prefix in record and record[prefix] is None:
            configs[prefix] = None
            continue
        fields = _prefixed(record, prefix)
        path = fields.pop("class_path", None)
        if path is None:
            continue
        if fields.pop("reloadable", True) is False:
            raise ValueError(
                f"The checkpoint's {prefix} was a {path!r}, which cannot be rebuilt from its record: {hint} "
                f"({prefix}=...)."
            )
        configs[prefix] = {"class_path": path, "init_args": fields}
    return configs


def build_object(config: Mapping[str, Any] | None, *, partial: bool) -> Any:
    """Build a config of :func:`object_configs`: the object itself, or (``partial=True``) a factory for it."""
    if config is None:
        return None
    target, init_args = _import(config["class_path"]), dict(config["init_args"])
    if not partial:
        return target(**init_args)
    return functools.partial(target, **init_args) if init_args or isinstance(target, type) else target


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
    # only the objects this class takes and the caller did not pass (an overridden lambda need not be rebuildable)
    needed = {k: v for k, v in record.items() if k.partition(".")[0] in params - set(overrides)}
    for prefix, config in object_configs(needed, "pass it to load_from_checkpoint").items():
        kwargs[prefix] = build_object(config, partial=prefix not in _BUILT_OBJECTS)
    kwargs.update(overrides)
    return kwargs
