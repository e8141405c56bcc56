"""Name -> factory table for the project's own architectures (torchvision-style, one entry per name)."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from lightning_kd.models import vit as _vit

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}

# Built by name but not listed: the paper's ViT-table students and their pycls ResNet-56 teacher (224 px inputs,
# no BatchNorm to fold: the zoo-wide tests and presets do not apply). The package imports each builder's module
# (and timm, an optional dependency) only when the builder is first asked for.
_UNLISTED = frozenset(_vit.__all__)


def register_model(fn: ModelFactory) -> ModelFactory:
    """Register ``fn`` under its ``__name__``; the name is what :func:`create_model` accepts.

    Raises:
        ValueError: if the name is already registered (two architectures must never share a name).
    """
    name = fn.__name__
    if name in _UNLISTED:
        raise ValueError(f"A model named {name!r} is already defined in {_vit.__name__}.")
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered ({_MODELS[name].__module__}).")
    _MODELS[name] = fn
    return fn


def get_model_factory(name: str) -> ModelFactory:
    """Return the factory registered under ``name``.

    Raises:
        ValueError: naming the unknown model, the closest registered names, and the prefixes for other libraries.
    """
    if name in _UNLISTED:
        return getattr(_vit, name)
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, [*_MODELS, *sorted(_UNLISTED)], n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Use one of lightning_kd.models.list_models(), or a "
            "'torchvision/<name>' or 'timm/<name>' name for those libraries' models."
        ) from None


def list_models() -> list[str]:
    """Names of the project's own architectures, sorted case-insensitively."""
    return sorted(_MODELS, key=str.lower)
