"""Exact resume: the global random-number states travel with every checkpoint.

Lightning 2.x saves the model, optimizers, schedulers, loops and callbacks in a checkpoint, but not the random
states of ``torch``, ``numpy`` and ``random``. A run resumed with ``fit(ckpt_path=...)`` after
``seed_everything`` therefore replays the *first* epoch's random stream: another shuffling order (a
``RandomSampler`` draws its seed from the global ``torch`` generator), other augmentations (drawn in the main
process, or in workers seeded from the global generator) and other dropout masks. The resumed run is valid but
not the run it continues.

:class:`RandomStateCheckpoint` stores those states in the checkpoint and puts them back when training resumes,
so a run stopped after epoch ``k`` and resumed ends with the same weights as an uninterrupted run (deterministic
kernels assumed: ``Trainer(deterministic=True)``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

__all__ = ["RandomStateCheckpoint", "collect_random_states", "restore_random_states"]


def collect_random_states() -> dict[str, Any]:
    """This process's global random states, as tensors and primitives (loadable with ``weights_only=True``).

    Returns:
        ``{"torch": ByteTensor, "numpy": {...}, "python": [...], "cuda": [ByteTensor, ...]}``; ``cuda`` only when
        CUDA is initialized (its generators exist per device).
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Set this process's global random states from :func:`collect_random_states` output."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomStateCheckpoint(Callback):
    """Save the global random states of every process in each checkpoint; restore them when training resumes.

    With it, ``fit(ckpt_path="last.ckpt")`` continues the random stream (shuffling, augmentation, dropout) where
    the stopped run left it, so the resumed run is bit-for-bit the uninterrupted one on deterministic kernels.
    Under DDP each process's states are gathered and each process gets its own back (same world size).

    Checkpoints are written at epoch ends (Lightning's ``ModelCheckpoint``), when the states are those the next
    epoch starts from. Not covered: generators that a data module or a model owns itself (they are not global),
    and persistent dataloader workers, whose random streams live in the worker processes (with
    ``persistent_workers=True`` the resumed workers are seeded anew; use ``num_workers=0`` or per-epoch seeding
    when bit-exact resume matters).

    Example::

        trainer = Trainer(deterministic=True, callbacks=[RandomStateCheckpoint(), ModelCheckpoint(save_last=True)])
        trainer.fit(module, data, ckpt_path="runs/.../checkpoints/last.ckpt")

    In a YAML config: ``- class_path: lightning_kd.callbacks.rng_state.RandomStateCheckpoint`` under
    ``trainer.callbacks``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._trainer: Trainer | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    @override
    def state_dict(self) -> dict[str, Any]:
        states = collect_random_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every process writes its checkpoint dict (rank 0 saves it): a collective is allowed here
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict["per_rank"]
        rank = self._trainer.global_rank if self._trainer is not None else 0
        if len(per_rank) != (self._trainer.world_size if self._trainer is not None else 1):
            rank_zero_warn(
                f"The checkpoint holds the random states of {len(per_rank)} process(es) but this run has "
                f"{self._trainer.world_size if self._trainer is not None else 1}: every process starts from process "
                "0's states, so the resumed run is valid but not bit-identical to an uninterrupted one."
            )
            rank = 0
        restore_random_states(per_rank[rank])

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.state_key not in checkpoint.get("callbacks", {}):
            rank_zero_warn(
                "The checkpoint was written without RandomStateCheckpoint: the resumed run replays the random stream "
                "from the seed (other shuffling and augmentation than an uninterrupted run would have had)."
            )
