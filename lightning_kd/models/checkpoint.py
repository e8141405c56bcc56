"""Safe loading of network weights from reference, plain and Lightning checkpoint files.

Every file is read with ``torch.load(..., weights_only=True)``: a file that needs arbitrary Python code to
unpickle is refused, never executed. Five layouts are understood:

* the reference (RepDistiller / mdistiller) teacher format ``{"model": state_dict, "epoch": ..., ...}``;
* the pycls format of the paper's ViT-table code (``{"epoch": ..., "model_state": state_dict, ...}``), in which its
  ResNet-56 guidance teacher is saved;
* a plain state dict (``{name: Tensor}``), also under a ``"state_dict"`` key;
* a Lightning checkpoint of this project, whose network sits under ``model.`` (``ClassificationModule``)
  or ``student.`` (``DistillationModule``) in ``"state_dict"``;
* a ``.safetensors`` file (e.g. written by ``lightning-kd export-student``), which holds tensors only by design.

Wrapper prefixes added by ``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) are
stripped, so the returned keys match a bare network's ``state_dict()``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "load_state_dict_from_file",
    "load_weights",
]

# Prefixes under which this project's LightningModules keep the network to load, in order of preference.
_LIGHTNING_NETWORK_PREFIXES = ("model.", "student.")
# Prefixes that wrappers add to every key of the wrapped network's state dict.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# How many names an error message lists before it summarises the rest with a count.
_MAX_LISTED = 10

_ACCEPTED_FORMATS = (
    "Accepted formats: a reference checkpoint {'model': state_dict, 'epoch': ..., ...}; a pycls checkpoint "
    "{'model_state': state_dict, ...}; a plain state dict "
    "{name: Tensor} (optionally under a 'state_dict' key); or a Lightning checkpoint of lightning_kd whose "
    "'state_dict' holds the network under 'model.' (ClassificationModule) or 'student.' (DistillationModule)."
)


_CONVERT_HINT = (
    "If you trust its source, convert it once in a trusted environment: load it yourself with "
    "torch.load(path, weights_only=False) and re-save only the network's weights with "
    "torch.save({'model': model.state_dict()}, new_path)."
)


class UnsafeCheckpointError(ValueError):
    """The file holds pickled Python objects that ``weights_only=True`` refuses to load."""


class CheckpointFormatError(ValueError):
    """The file is not a readable checkpoint, or its structure is none of the accepted formats."""


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model's."""


def load_state_dict_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a network's state dict from a checkpoint file, safely.

    The file is opened with ``torch.load(path, map_location="cpu", weights_only=True)``; this function never
    falls back to ``weights_only=False``.

    Args:
        path: A reference checkpoint (weights under ``"model"``), a plain state dict, a Lightning checkpoint
            of this project (``ClassificationModule`` or ``DistillationModule``), or a ``.safetensors`` file.

    Returns:
        The bare network's state dict on CPU, with ``module.`` / ``_orig_mod.`` wrapper prefixes stripped.
        For a ``DistillationModule`` checkpoint this is the student.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        UnsafeCheckpointError: If the file contains pickled Python objects other than tensors and plain
            containers (it is not unpickled).
        CheckpointFormatError: If the file is not a PyTorch checkpoint or its structure is not one of the
            accepted formats.

    Example::

        >>> state_dict = load_state_dict_from_file("ckpt_epoch_240.pth")  # doctest: +SKIP
        >>> model.load_state_dict(state_dict)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint file not found: '{path}'.")
    if path.is_dir():
        raise IsADirectoryError(f"Expected a checkpoint file but '{path}' is a directory.")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False; ours explains the risk and the safe conversion.
        reason = _weights_only_reason(err)
        if reason.startswith("Unsupported global"):
            raise UnsafeCheckpointError(_unsafe_message(path, reason)) from None
        raise CheckpointFormatError(
            f"'{path}' could not be read with torch.load(weights_only=True) ({reason}); it was not loaded. "
            f"It is either not torch.save output or uses pickle features that safe loading refuses. {_CONVERT_HINT}"
        ) from None
    except (RuntimeError, KeyError, EOFError, ValueError) as err:
        # torch raises these for truncated files and files that are not torch.save output at all.
        raise CheckpointFormatError(
            f"'{path}' is not a readable PyTorch checkpoint ({type(err).__name__}: {err})."
        ) from err
    return _extract_state_dict(obj, path)


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load the weights stored in ``path`` into ``model`` in place.

    Keys and shapes are compared before anything is copied, so a mismatching checkpoint leaves the model
    untouched and produces one error that names every problem.

    Args:
        model: The network to fill, built with the architecture and ``num_classes`` the checkpoint was
            trained with.
        path: Any file :func:`load_state_dict_from_file` accepts.
        strict: When ``False``, missing and unexpected keys are tolerated (shape mismatches never are).

    Returns:
        ``model``, with the checkpoint's weights.

    Raises:
        CheckpointMismatchError: Listing missing keys, unexpected keys and shape mismatches by name. When only
            the classifier's output size differs, the message says the checkpoint was trained with a different
            number of classes, giving both numbers.
        FileNotFoundError, UnsafeCheckpointError, CheckpointFormatError: As :func:`load_state_dict_from_file`.

    Example::

        >>> model = create_model("resnet56", num_classes=100)  # doctest: +SKIP
        >>> load_weights(model, "resnet56_vanilla/ckpt_epoch_240.pth")  # doctest: +SKIP
    """
    state_dict = load_state_dict_from_file(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        (key, tuple(state_dict[key].shape), tuple(expected[key].shape))
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if not strict:
        missing, unexpected = [], []
    if missing or unexpected or mismatched:
        model_name = type(model).__name__
        classes = None if (missing or unexpected) else _classifier_mismatch(expected, mismatched)
        if classes is not None:
            trained, built, layer = classes
            raise CheckpointMismatchError(
                f"Cannot load '{path}' into {model_name}: the checkpoint was trained with {trained} classes but "
                f"the model was built with num_classes={built}; pass num_classes={trained} (or use a checkpoint "
                f"trained with {built} classes). Classifier {layer!r}: {_format_shapes(mismatched)}."
            )
        lines = [f"Cannot load '{path}' into {model_name}: the checkpoint does not match the model."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_format_names(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_format_names(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_format_shapes(mismatched)}")
        lines.append("  Check that the model name matches the architecture the checkpoint was trained with.")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=strict)
    return model


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file: raw tensors and a JSON header, nothing that could execute code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state_dict = load_file(path, device="cpu")
    except SafetensorError as err:
        raise CheckpointFormatError(f"'{path}' is not a readable safetensors file ({err}).") from err
    if not state_dict:
        raise CheckpointFormatError(f"'{path}' is a safetensors file without any tensor.")
    return _strip_wrapper_prefixes(state_dict)


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the network's state dict inside a loaded checkpoint object and strip wrapper prefixes."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"'{path}' holds a {type(obj).__name__}, not a dict of weights. {_ACCEPTED_FORMATS}"
        )
    if _is_state_dict(obj):
        return _strip_wrapper_prefixes(obj)
    if _is_state_dict(obj.get("model")):
        return _strip_wrapper_prefixes(obj["model"])
    if _is_state_dict(obj.get("model_state")):  # pycls: the ViT table's guidance teacher (docs/sources.md §7.4)
        return _strip_wrapper_prefixes(obj["model_state"])
    if _is_state_dict(obj.get("state_dict")):
        nested = obj["state_dict"]
        for prefix in _LIGHTNING_NETWORK_PREFIXES:
            sub = {key[len(prefix) :]: value for key, value in nested.items() if key.startswith(prefix)}
            if sub:
                return _strip_wrapper_prefixes(sub)
        if "pytorch-lightning_version" not in obj:
            return _strip_wrapper_prefixes(nested)
        roots = sorted({key.split(".", 1)[0] for key in nested})
        raise CheckpointFormatError(
            f"'{path}' is a Lightning checkpoint whose 'state_dict' has no 'model.' or 'student.' entries "
            f"(top-level names found: {_format_names(roots)}). {_ACCEPTED_FORMATS}"
        )
    described = ", ".join(f"{key!r}: {type(value).__name__}" for key, value in list(obj.items())[:_MAX_LISTED])
    more = f", ... ({len(obj) - _MAX_LISTED} more)" if len(obj) > _MAX_LISTED else ""
    raise CheckpointFormatError(
        f"Could not find network weights in '{path}'; it holds a dict with {{{described}{more}}}. {_ACCEPTED_FORMATS}"
    )


def _is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a non-empty mapping from string names to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())
    )


def _strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` while every key carries one (they can nest, e.g. compile of DDP)."""
    result = dict(state_dict)
    while True:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(key.startswith(p) for key in result)), None)
        if prefix is None:
            return result
        result = {key[len(prefix) :]: value for key, value in result.items()}


def _classifier_mismatch(
    expected: Mapping[str, torch.Tensor], mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
) -> tuple[int, int, str] | None:
    """Return ``(checkpoint_classes, model_classes, layer)`` if only the final layer's output size differs.

    The final layer is the module owning the last ``weight``/``bias`` entry of the model's state dict.
    """
    last = next((key for key in reversed(list(expected)) if key.endswith((".weight", ".bias"))), None)
    if last is None or not mismatched:
        return None
    layer = last.rsplit(".", 1)[0]
    if any(key not in (f"{layer}.weight", f"{layer}.bias") for key, _, _ in mismatched):
        return None
    trained_sizes = set()
    for _, got, want in mismatched:
        if len(got) != len(want) or got[1:] != want[1:] or got[0] == want[0]:
            return None
        trained_sizes.add(got[0])
    if len(trained_sizes) != 1:
        return None
    return trained_sizes.pop(), mismatched[0][2][0], layer


def _truncate(entries: list[str]) -> str:
    shown = ", ".join(entries[:_MAX_LISTED])
    return shown + (f", ... and {len(entries) - _MAX_LISTED} more" if len(entries) > _MAX_LISTED else "")


def _format_names(names: list[str]) -> str:
    return _truncate([repr(name) for name in names])


def _format_shapes(mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    return _truncate([f"{key!r} checkpoint {list(got)} vs model {list(want)}" for key, got, want in mismatched])


def _weights_only_reason(err: pickle.UnpicklingError) -> str:
    """The specific reason inside torch's long weights-only failure message (or the whole message)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
    reason = found.group(1) if found else str(err)
    # Keep the first sentence: the rest of torch's text recommends allow-listing the global.
    return reason.split(". ", 1)[0].strip().rstrip(".")


def _unsafe_message(path: Path, reason: str) -> str:
    return (
        f"Refusing to load '{path}': it contains pickled Python objects that are not plain tensors ({reason}). "
        "It was NOT loaded or executed, for safety: unpickling such a file can run arbitrary code. "
        f"{_CONVERT_HINT}"
    )
