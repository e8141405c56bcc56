"""``lightning-kd export-student CKPT OUT``: the trained network alone, loadable by ``create_model``.

Writes the student of a :class:`~lightning_kd.DistillationModule` checkpoint (or the model of a
:class:`~lightning_kd.ClassificationModule` checkpoint) as a plain state dict (``torch.save``), or as a
``.safetensors`` file when ``OUT`` ends with ``.safetensors``, and beside it ``OUT`` with suffix ``.json``::

    {"architecture": "resnet8x4", "num_classes": 100, "mean": [...], "std": [...],
     "source_checkpoint": "/abs/path/best.ckpt", "format": "safetensors", ...}

so that ``create_model(meta["architecture"], num_classes=meta["num_classes"], weights=OUT)`` rebuilds it. The
teacher is never needed (nor read). Normalization comes from the data record the ``lightning-kd`` CLI writes into
its checkpoints; for a checkpoint saved elsewhere it is unknown (``null``) unless ``--mean`` / ``--std`` give it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lightning_kd._checkpoint_file import check_checkpoint_file
from lightning_kd._record import DATA_RECORD_KEY, record_shape

__all__ = ["export_student", "main"]


def export_student(
    ckpt_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> dict[str, Any]:
    """Write the checkpoint's student (or classifier) weights to ``out`` and its description to ``out.json``.

    Args:
        ckpt_path: a Lightning checkpoint of this project (``DistillationModule`` or ``ClassificationModule``).
        out: the weights file to write: ``.safetensors`` for safetensors, anything else for ``torch.save``.
        mean: per-channel input normalization mean; overrides the checkpoint's data record.
        std: per-channel input normalization standard deviation; overrides the checkpoint's data record.

    Returns:
        The description written to the JSON file.

    Raises:
        FileNotFoundError: if ``ckpt_path`` does not exist.
        ValueError: if the checkpoint is not one of this project's module checkpoints.
    """
    ckpt_path, out = Path(ckpt_path), Path(out)
    check_checkpoint_file(ckpt_path, what="Checkpoint")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {str(ckpt_path)!r} cannot be read by torch.load ({first}).") from None
    record = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or not isinstance(state, dict):
        raise ValueError(
            f"{ckpt_path} is not a Lightning checkpoint of a lightning_kd module (it needs 'hyper_parameters' and "
            "'state_dict'); export-student reads DistillationModule and ClassificationModule checkpoints."
        )
    shape = record_shape(record)
    if shape is None:
        raise ValueError(
            f"{ckpt_path} records neither a 'student' nor a 'model' network (hyperparameter keys: {sorted(record)}); "
            "it was not saved by a lightning_kd DistillationModule or ClassificationModule."
        )
    # the trained network is the shape's first: the student of a distillation record, the model of a classifier's
    name_key = shape[0][0]
    class_key, prefix = f"{name_key}_class", f"{name_key}."
    weights = {k[len(prefix) :]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{ckpt_path} holds no '{prefix}*' weights in its state_dict.")

    data = checkpoint.get(DATA_RECORD_KEY) or {}
    num_classes = record.get("num_classes", data.get("num_classes"))
    meta: dict[str, Any] = {
        # a name for create_model, or None for a network given as a module (then `architecture_class` says which)
        "architecture": record.get(name_key) if isinstance(record.get(name_key), str) else None,
        "architecture_class": record.get(class_key),
        "num_classes": num_classes,
        "mean": list(mean) if mean is not None else data.get("mean"),
        "std": list(std) if std is not None else data.get("std"),
        "normalization_source": _normalization_source(mean, std, data),
        "source_checkpoint": str(ckpt_path.resolve()),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "format": "safetensors" if out.suffix == ".safetensors" else "torch",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if meta["format"] == "safetensors":
        from safetensors.torch import save_file

        save_file(weights, out, metadata={k: json.dumps(v) for k, v in meta.items()})
    else:
        torch.save(weights, out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _normalization_source(mean: list[float] | None, std: list[float] | None, data: dict[str, Any]) -> str:
    if mean is not None or std is not None:
        return "command line"
    if data.get("mean") is not None:
        return f"data module {data.get('class_path')} (recorded by the lightning-kd CLI)"
    return "unknown: the checkpoint holds no data record (not saved by the lightning-kd CLI); pass --mean/--std"


def main(argv: list[str] | None = None) -> int:
    """``lightning-kd export-student CKPT OUT [--mean M M M --std S S S]``."""
    parser = argparse.ArgumentParser(
        prog="lightning-kd export-student",
        description="Write the student of a distillation checkpoint (or the model of a classification checkpoint) "
        "alone: a plain state dict, or .safetensors when OUT ends with it, plus OUT.json describing it "
        "(architecture, num_classes, normalization). No teacher file is needed. "
        "Load it with lightning_kd.models.create_model(architecture, num_classes=..., weights=OUT).",
    )
    parser.add_argument("ckpt", type=Path, help="a Lightning checkpoint written by lightning-kd (or lightning_kd)")
    parser.add_argument("out", type=Path, help="output weights file (.safetensors, or e.g. .pth for torch.save)")
    parser.add_argument("--mean", type=float, nargs=3, help="input normalization mean (overrides the checkpoint's)")
    parser.add_argument("--std", type=float, nargs=3, help="input normalization std (overrides the checkpoint's)")
    args = parser.parse_args(argv)
    meta = export_student(args.ckpt, args.out, mean=args.mean, std=args.std)
    network = meta["architecture"] or meta["architecture_class"]
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} ({network}, {meta['num_classes']} classes)")
    return 0
