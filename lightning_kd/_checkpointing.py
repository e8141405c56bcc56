"""Checkpoints of the two LightningModules: the one primitive record saved, reloaded, and lenient state loading."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from typing_extensions import override

from lightning_kd._record import init_kwargs_from_record, is_primitive, subclass_init_args


class RecordedCheckpoints(LightningModule):
    """A LightningModule whose hyperparameters are the record codec's flat primitive record (:mod:`._record`).

    ``load_from_checkpoint`` rebuilds the constructor arguments from that record (networks by name, the loss, the
    optimizer and scheduler factories), and ``load_state_dict`` lets a checkpoint lack the state named by
    :meth:`optional_state_prefixes`. Subclasses call :meth:`_save_record` at the end of ``__init__`` and name
    their network arguments in :meth:`record_objects`.
    """

    @classmethod
    def record_objects(cls) -> tuple[str, ...]:
        """Constructor arguments that are networks (rebuilt from a model name in the record)."""
        return ()

    @classmethod
    @override
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Rebuild a module from a checkpoint of this project: its record gives the constructor arguments.

        Networks given by name, the loss, the optimizer and the scheduler are rebuilt from the checkpoint's
        primitive record (``student``, ``loss.class_path``, ``loss.kd_weight``, ...). Keyword arguments override
        the record. A network that was given as a module must be passed again (the error names the argument).
        A checkpoint saved without its teacher gets the teacher from ``teacher_weights`` (or a given module).

        Args:
            checkpoint_path: a ``.ckpt`` written by Lightning for this module.
            map_location: as for :func:`torch.load`; the module is moved to that device when it names one.
            hparams_file: not supported (the record lives in the checkpoint); must be ``None``.
            strict: strict state-dict loading (default: the module's ``strict_loading``).
            weights_only: as for :func:`torch.load`; default ``True`` (this project's checkpoints hold tensors and
                primitives only).
            **kwargs: constructor arguments that replace the record's.

        Raises:
            ValueError: a network given as a module is not passed; ``hparams_file`` is given.
        """
        if hparams_file is not None:
            raise ValueError(
                f"hparams_file={hparams_file!r} is not supported: the checkpoint's own record rebuilds the module; "
                "pass changed constructor arguments as keyword arguments instead."
            )
        checkpoint = torch.load(
            checkpoint_path, map_location=map_location or "cpu", weights_only=weights_only is not False
        )
        record = checkpoint.get("hyper_parameters", {})
        module = cls(**init_kwargs_from_record(cls, record, kwargs, cls.record_objects()))
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading if strict is None else strict)
        if isinstance(map_location, (str, torch.device)):
            module.to(map_location)
        return module

    def _save_record(self, record: dict[str, Any], base_init: Any, frame: Any) -> None:
        """Save the complete primitive record once: ``hparams`` == ``hparams_initial`` == what loggers receive.

        Primitive constructor arguments a subclass adds (read from the ``__init__`` frames above ``frame``) join it,
        so ``load_from_checkpoint`` passes them back.
        """
        known = set(inspect.signature(base_init).parameters) | set(record)
        extras = subclass_init_args(self, frame, known)
        bad = {k: type(v).__name__ for k, v in record.items() if not is_primitive(v)}
        if bad:  # a programming error of this package, not user input
            raise TypeError(f"The hyperparameter record must hold primitives only, got {bad}.")
        self.save_hyperparameters({**extras, **record})

    def optional_state_prefixes(self, state_dict: Mapping[str, Any]) -> tuple[str, ...]:
        """Prefixes of state a checkpoint may lack: the best-so-far tracker (not saved by older checkpoints)."""
        return ("val_acc1_best.",)

    @override
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict; state named by :meth:`optional_state_prefixes` may be missing.

        Raises:
            RuntimeError: with ``strict=True``, naming every other missing key and every unexpected key.
        """
        optional = self.optional_state_prefixes(state_dict)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(optional)]
        unexpected = list(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"Error loading the state dict into {type(self).__name__}: missing keys {missing}, unexpected keys "
                f"{unexpected}. The checkpoint was saved from a different network/loss configuration."
            )
        # the same result type torch returns (a named tuple), built from its public class, not its private name
        return type(result)(missing, unexpected)
