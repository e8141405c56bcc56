"""Run a short 2-process distillation ``fit`` on the digits and record what every rank saw.

Launched as a script by ``tests/test_distributed.py``: Lightning's ``ddp`` strategy re-executes this file once
per extra rank (a pytest process cannot be re-executed that way). Each rank writes ``rank<k>.json`` with the
hashes of its teacher and student weights and the validation metrics it holds after every epoch.

Usage: ``python tests/helpers/ddp_fit.py OUT_DIR TEACHER_WEIGHTS VAL_FRACTION [STRATEGY]`` with STRATEGY ``ddp``
(default) or ``fsdp`` (FSDP on CPU processes with :class:`~lightning_kd.strategies.FrozenApartPolicy`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from lightning_kd import DistillationModule
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD
from lightning_kd.strategies import FrozenApartPolicy

BATCH_SIZE = 32
VAL_BATCH_SIZE = 64
IMAGE_SIZE = 16
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy on CPU processes (gloo), to test the sharding layout without GPUs.

    Lightning 2.6 refuses ``strategy="fsdp"`` without CUDA (``ValueError: The strategy `fsdp` requires a GPU
    accelerator``); the check applies to the ``FSDPStrategy`` class itself, so a subclass runs the same code.
    torch's FSDP then needs ``device_id=cpu`` to accept CPU parameters (``RuntimeError: FSDP needs a non-CPU
    accelerator device``), which Lightning does not pass: the model is wrapped here with it, and Lightning keeps
    an already wrapped model.
    """

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
            self.kwargs.pop("auto_wrap_policy", None)  # applied
        return super()._setup_model(model)


def make_strategy(name: str) -> str | Strategy:
    """``ddp`` as is; ``fsdp``: FSDP on CPU processes with the frozen-apart policy (Lightning's default
    ``use_orig_params=True``, so optimizer states save as usual)."""
    if name == "fsdp":
        return CPUFSDPStrategy(auto_wrap_policy=FrozenApartPolicy(min_num_params=20_000), process_group_backend="gloo")
    return name


def fsdp_units(model: torch.nn.Module) -> dict[str, list[str]]:
    """Each FSDP unit's module path and the parameter names flattened into its ``FlatParameter``."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = {}
    for path, module in model.named_modules():
        if isinstance(module, FullyShardedDataParallel) and module._handle is not None:
            prefix = path.replace("_fsdp_wrapped_module.", "").replace("_fsdp_wrapped_module", "")
            names = [name.replace("_fsdp_wrapped_module.", "") for name in module._handle.flat_param._fqns]
            units[prefix] = [f"{prefix}.{name}" if prefix else name for name in names]
    return units


def full_state_dict(trainer: Trainer, pl_module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole module's state on every process (under FSDP: gathered from the shards, a collective)."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = trainer.strategy.model
    if isinstance(model, FSDP):
        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
            return dict(model.state_dict())
    return dict(pl_module.state_dict())


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix removed."""
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def state_hash(module: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state dict (names, dtypes and raw bytes), in key order."""
    digest = hashlib.sha256()
    state = module if isinstance(module, dict) else module.state_dict()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankRecorder(Callback):
    """Write, on every rank, the metrics it holds after each validation epoch and the final weight hashes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        # after the module's epoch-end hook: the values that were logged (metric objects are synced across ranks)
        keys = ("val/acc1", "teacher/val_acc1", "val/acc1_best")
        self.epochs.append({k: float(trainer.callback_metrics[k]) for k in keys if k in trainer.callback_metrics})

    def on_fit_end(self, trainer, pl_module) -> None:
        state = full_state_dict(trainer, pl_module)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "teacher_sha": state_hash(sub_state(state, "teacher")),
            "student_sha": state_hash(sub_state(state, "student")),
            # without BatchNorm running statistics, which FSDP (unlike DDP) leaves per process
            "student_params_sha": state_hash(
                {k: v for k, v in sub_state(state, "student").items() if not k.endswith(BN_BUFFERS)}
            ),
            "teacher_requires_grad": any(p.requires_grad for p in pl_module.teacher.parameters()),
            "teacher_training": any(m.training for m in pl_module.teacher.modules()),
            "epochs": self.epochs,
            "fsdp_units": fsdp_units(trainer.strategy.model),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
        if trainer.global_rank == 0:
            torch.save(sub_state(state, "student"), self.out / "student_final.pt")


def main(out: Path, teacher_weights: str, val_fraction: float, strategy: str = "ddp") -> None:
    seed_everything(0, workers=True)
    data = DigitsDataModule(
        batch_size=BATCH_SIZE, val_batch_size=VAL_BATCH_SIZE, image_size=IMAGE_SIZE, val_fraction=val_fraction
    )
    module = DistillationModule(
        "resnet8",
        "resnet8",
        KD(temperature=4.0, ce_weight=1.0, kd_weight=0.1),
        num_classes=10,
        teacher_weights=teacher_weights,
        lr_scheduler=None,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=make_strategy(strategy),
        max_epochs=2,
        limit_train_batches=10,
        log_every_n_steps=1,
        logger=CSVLogger(out, name="logs", version=0),
        callbacks=[RankRecorder(out), ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), *sys.argv[4:5])
