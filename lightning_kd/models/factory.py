"""``create_model``: one entry point for the project's architectures and torchvision/timm models."""

from __future__ import annotations

import os

from torch import nn

from lightning_kd.models._registry import get_model_factory
from lightning_kd.models.checkpoint import CheckpointMismatchError, load_weights
from lightning_kd.models.external import (
    TIMM_PREFIX,
    TORCHVISION_PREFIX,
    _check_num_classes,
    timm_model,
    torchvision_model,
)

__all__ = ["build_network", "create_model", "infer_num_classes"]

_TORCHVISION_NAME = "torchvision/"
_TIMM_NAME = "timm/"


def create_model(name: str, num_classes: int = 100, weights: str | None = None) -> nn.Module:
    """Build a classification network by name, optionally with weights.

    Args:
        name: One of :func:`~lightning_kd.models.list_models` (the CIFAR zoo, e.g. ``"resnet8x4"``), or
            ``"torchvision/<name>"`` / ``"timm/<name>"`` for those libraries' models (``"torchvision/resnet34"``,
            ``"timm/resnet18.a1_in1k"``).
        num_classes: Size of the classifier output; a positive integer. It must match the weights, if any:
            a disagreement is an error naming both numbers, never a silent override.
        weights: Where the initial weights come from:

            * ``None``: random initialisation;
            * a path to a checkpoint file: a reference checkpoint (``ckpt_epoch_240.pth``, weights under
              ``"model"``), a plain state dict, or a Lightning checkpoint of this project (its ``model.`` or
              ``student.`` network); read with ``torch.load(weights_only=True)`` and loaded strictly;
            * ``"torchvision:<Enum>.<MEMBER>"`` or ``"torchvision:<MEMBER>"`` (e.g.
              ``"torchvision:ResNet34_Weights.IMAGENET1K_V1"``, ``"torchvision:DEFAULT"``), only with a
              ``torchvision/`` name;
            * ``"timm:pretrained"``, only with a ``timm/`` name.

            Library weights are downloaded by that library when the model is built.

    Returns:
        The bare network (state dict keys without wrapper prefixes); ``forward(x)`` returns logits.

    Raises:
        ValueError: For an invalid ``num_classes``, an unknown model name (close names are suggested), a weights
            spec for another library, or weights that do not match the model (``CheckpointMismatchError``).
        FileNotFoundError: If ``weights`` is a path that does not exist.
        ImportError: For a ``timm/`` name when timm is not installed.

    Example::

        >>> from lightning_kd.models import create_model
        >>> student = create_model("resnet8x4", num_classes=100)  # doctest: +SKIP
        >>> teacher = create_model("resnet32x4", weights="resnet32x4_vanilla/ckpt_epoch_240.pth")  # doctest: +SKIP
        >>> imagenet_teacher = create_model(
        ...     "torchvision/resnet34", num_classes=1000, weights="torchvision:ResNet34_Weights.IMAGENET1K_V1"
        ... )  # doctest: +SKIP
        >>> create_model("torchvision/resnet18", num_classes=10).fc.out_features
        10
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Model name must be a non-empty string, got {name!r}.")
    _check_num_classes(num_classes)
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    library_spec = weights is not None and weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))
    if weights is not None and not library_spec and not os.path.exists(weights):
        # Checked before building: a large model should not be built only to fail on a typo.
        raise FileNotFoundError(
            f"Checkpoint file not found: {weights!r}. weights must be None, a checkpoint file path, "
            f"'{TORCHVISION_PREFIX}<Enum>.<MEMBER>' (torchvision/ models) or 'timm:pretrained' (timm/ models)."
        )

    if name.startswith(_TORCHVISION_NAME):
        if library_spec and not weights.startswith(TORCHVISION_PREFIX):
            raise _foreign_spec_error(name, weights)
        model = torchvision_model(_library_name(name), num_classes, weights if library_spec else None)
    elif name.startswith(_TIMM_NAME):
        if library_spec and not weights.startswith(TIMM_PREFIX):
            raise _foreign_spec_error(name, weights)
        model = timm_model(_library_name(name), num_classes, weights if library_spec else None)
    else:
        if library_spec:
            raise _foreign_spec_error(name, weights)
        model = get_model_factory(name)(num_classes=num_classes)

    if weights is not None and not library_spec:
        try:
            load_weights(model, weights, strict=True)
        except CheckpointMismatchError as err:
            # the loader knows only the network's class (CifarResNet for every CIFAR ResNet): name the model asked for
            raise CheckpointMismatchError(f"Model {name!r} (num_classes={num_classes}): {err}") from None
    return model


def _library_name(name: str) -> str:
    library, _, inner = name.partition("/")
    if not inner.strip():
        raise ValueError(f"Model name {name!r} lacks the {library} model name, e.g. '{library}/resnet18'.")
    return inner.strip()


def _foreign_spec_error(name: str, weights: str) -> ValueError:
    library = weights.split(":", 1)[0]
    return ValueError(
        f"weights={weights!r} are {library} pretrained weights, which only apply to '{library}/<name>' models, "
        f"not {name!r}. For {name!r} pass a checkpoint file path or None."
    )


def infer_num_classes(model: nn.Module) -> int | None:
    """The number of classes a classifier predicts, read without running it.

    Uses the ``num_classes`` attribute (this project's models and timm's), else the output size of the last
    ``nn.Linear`` (torchvision's classifiers). Returns ``None`` when neither exists.
    """
    value = getattr(model, "num_classes", None)
    if isinstance(value, int):
        return value
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def build_network(spec: nn.Module | str, num_classes: int | None, weights: str | None, role: str) -> nn.Module:
    """Build the model ``spec`` names with :func:`~lightning_kd.models.create_model`, or take the given module.

    ``weights`` (a checkpoint path, or for a name also a library weights spec) are loaded strictly either way.
    """
    if isinstance(spec, nn.Module):
        if weights is not None:
            if weights.startswith((TORCHVISION_PREFIX, TIMM_PREFIX)):
                raise ValueError(
                    f"{role} weights {weights!r} name library weights, which apply to a {role} given by name "
                    f"(e.g. 'torchvision/resnet34'); for a module pass a checkpoint path."
                )
            load_weights(spec, weights)
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{role} must be an nn.Module or a model name, got {type(spec).__name__}.")
    if num_classes is None:
        raise ValueError(
            f"Cannot build {role} {spec!r} without num_classes: pass num_classes=..., or give a data module "
            "through the CLI (data.num_classes is linked to the model)."
        )
    return create_model(spec, num_classes=num_classes, weights=weights)
