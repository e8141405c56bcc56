"""Builders for torchvision and timm classifiers (ImageNet teachers and students).

Pretrained weights are named by a spec string, resolved without downloading anything; a download happens
only when a model is built with those weights.

* torchvision: ``"torchvision:<EnumName>.<MEMBER>"`` (e.g. ``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``),
  or just ``"torchvision:<MEMBER>"`` for the model's own enum (e.g. ``"torchvision:DEFAULT"``).
* timm: ``"timm:pretrained"``, the model's default pretrained tag; pick another tag in the model name, as timm
  does (``timm/resnet18.a1_in1k`` with ``"timm:pretrained"``).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = [
    "TIMM_PREFIX",
    "TIMM_PRETRAINED",
    "TORCHVISION_PREFIX",
    "resolve_torchvision_weights",
    "timm_model",
    "torchvision_model",
]

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
TIMM_PRETRAINED = "timm:pretrained"


def torchvision_model(name: str, num_classes: int, weights: str | None) -> nn.Module:
    """Build a torchvision classification model.

    Args:
        name: A torchvision classification model name (``torchvision.models.list_models(module=torchvision.models)``),
            e.g. ``"resnet18"``.
        num_classes: Size of the classifier output. With pretrained weights it must equal the number of classes
            the weights were trained with.
        weights: ``None`` for random initialisation, or a torchvision weights spec (see
            :func:`resolve_torchvision_weights`).

    Returns:
        The network; ``forward(x)`` returns logits.

    Raises:
        ValueError: For an unknown model name (close names are suggested), an unknown or foreign weights spec,
            or a ``num_classes`` that differs from the pretrained weights' class count.

    Example::

        >>> model = torchvision_model("resnet18", num_classes=10, weights=None)
        >>> model.fc.out_features
        10
    """
    _check_num_classes(num_classes)
    from torchvision import models

    key = _check_torchvision_name(name)
    resolved = None if weights is None else resolve_torchvision_weights(key, weights)
    if resolved is not None:
        trained = len(resolved.meta["categories"])
        if num_classes != trained:
            raise ValueError(
                f"The torchvision weights {resolved} were trained with {trained} classes but num_classes="
                f"{num_classes}; pass num_classes={trained} (to fine-tune on {num_classes} classes, build with the "
                "pretrained weights and replace the classifier yourself)."
            )
    return models.get_model(key, weights=resolved, num_classes=num_classes)


def resolve_torchvision_weights(name: str, spec: str) -> WeightsEnum:
    """Turn a torchvision weights spec into the weights enum member for model ``name``, without downloading.

    Args:
        name: The torchvision model name the weights are for, e.g. ``"resnet34"``.
        spec: ``"torchvision:<EnumName>.<MEMBER>"`` (``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``) or
            ``"torchvision:<MEMBER>"`` (``"torchvision:DEFAULT"``) for the model's own weights enum. The
            ``torchvision:`` prefix may be left out.

    Returns:
        The ``WeightsEnum`` member.

    Raises:
        ValueError: If the model has no pretrained weights, the member does not exist, or the weights belong
            to another model.

    Example::

        >>> resolve_torchvision_weights("resnet34", "torchvision:ResNet34_Weights.IMAGENET1K_V1")
        ResNet34_Weights.IMAGENET1K_V1
    """
    from torchvision import models

    key = _check_torchvision_name(name)
    member = spec.removeprefix(TORCHVISION_PREFIX).strip()
    try:
        enum_cls = models.get_model_weights(key)
    except ValueError:
        raise ValueError(f"torchvision model {key!r} has no pretrained weights; use weights=None.") from None
    available = ", ".join(f"'{TORCHVISION_PREFIX}{m}'" for m in enum_cls.__members__)
    if "." in member:
        enum_name, _, member = member.partition(".")
        if enum_name != enum_cls.__name__:
            raise ValueError(
                f"Weights spec {spec!r} names {enum_name}, but torchvision model {key!r} takes {enum_cls.__name__}; "
                f"available: {available}."
            )
    try:
        return enum_cls[member]
    except KeyError:
        raise ValueError(f"Unknown torchvision weights {spec!r} for model {key!r}; available: {available}.") from None


def timm_model(name: str, num_classes: int, weights: str | None) -> nn.Module:
    """Build a timm model (needs the optional dependency: ``pip install "lightning-kd[timm]"``).

    Args:
        name: A timm model name, optionally with a pretrained tag (``"resnet18"``, ``"resnet18.a1_in1k"``).
        num_classes: Size of the classifier output. With pretrained weights it must equal the number of classes
            the weights were trained with.
        weights: ``None`` for random initialisation or ``"timm:pretrained"`` for timm's pretrained weights
            (downloaded by timm when the model is built).

    Returns:
        The network; ``forward(x)`` returns logits.

    Raises:
        ImportError: If timm is not installed.
        ValueError: For an unknown model name (close names are suggested), an unknown weights spec, a model
            without pretrained weights, or a ``num_classes`` that differs from the pretrained weights' class count.

    Example::

        >>> model = timm_model("resnet10t", num_classes=10, weights=None)
        >>> model.get_classifier().out_features
        10
    """
    _check_num_classes(num_classes)
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f'timm/{name} needs the optional dependency timm; install it with: pip install "lightning-kd[timm]"'
        ) from err

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(f'timm/{c}') for c in close)}?" if close else ""
        raise ValueError(f"Unknown timm model {name!r}.{hint} See timm.list_models().")
    listing = f"timm.list_pretrained('{name.split('.', 1)[0]}*')"
    if "." in name and not timm.is_model_pretrained(name):
        raise ValueError(f"Unknown timm pretrained tag in {name!r}; see {listing}.")
    pretrained = False
    if weights is not None:
        if weights.strip() != TIMM_PRETRAINED:
            raise ValueError(
                f"Unknown timm weights spec {weights!r}; use {TIMM_PRETRAINED!r} (choose a pretrained tag in the "
                "model name, e.g. 'timm/resnet18.a1_in1k'), a checkpoint path, or None."
            )
        if not timm.is_model_pretrained(name):
            raise ValueError(f"timm model {name!r} has no pretrained weights; see {listing}.")
        trained = timm.models.get_pretrained_cfg(name).num_classes
        if num_classes != trained:
            raise ValueError(
                f"The timm pretrained weights of {name!r} were trained with {trained} classes but num_classes="
                f"{num_classes}; pass num_classes={trained} (to fine-tune on {num_classes} classes, build with the "
                "pretrained weights and call model.reset_classifier(num_classes) yourself)."
            )
        pretrained = True
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)


def _check_num_classes(num_classes: object) -> None:
    """Raise ``ValueError`` unless ``num_classes`` is a positive ``int`` (``bool`` excluded)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")


def _check_torchvision_name(name: str) -> str:
    """Return the lower-cased torchvision classification model name, or raise with close matches."""
    from torchvision import models

    key = name.lower()
    known = models.list_models(module=models)
    if key not in known:
        close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(f'torchvision/{c}') for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown torchvision classification model {name!r}.{hint} "
            "See torchvision.models.list_models(module=torchvision.models)."
        )
    return key
