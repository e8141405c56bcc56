"""Bad input gets one clear error (what is wrong, what to do), raised before any training step where possible.

The bad inputs a user can give and where each case is tested:

* unknown model name, closest names suggested: here;
* ``num_classes`` disagreeing between data, student and teacher: here;
* a teacher checkpoint for another architecture or class count: here;
* a config key that does not exist (LightningCLI names it): here;
* a non-finite loss (stops, naming the epoch and the span of steps; earlier checkpoints stay intact): here;
* a checkpoint carrying arbitrary pickled code, refused without running it:
  ``tests/test_checkpoint.py::test_pickled_code_is_refused_not_run``;
* missing or empty data directory, empty class folder, corrupt image file: ``tests/test_data.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_kd import DistillationModule
from lightning_kd.cli import main as cli_main
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model
from lightning_kd.models.checkpoint import CheckpointMismatchError
from tests.helpers.tiny import TinyNet, separable_loaders

ROOT = Path(__file__).resolve().parents[1]


class _CountSteps(Callback):
    """Counts training batches: the errors below must come before the first one."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# ---------------------------------------------------------------- unknown model names


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("resnet8x5", "'resnet8x4'"), ("wrn_40_3", "'wrn_40_2'"), ("torchvision/resnet188", "'torchvision/resnet18'")],
)
def test_unknown_model_name_suggests_the_closest(name, suggestion):
    with pytest.raises(ValueError, match=rf"Unknown .*model '{name.split('/')[-1]}'.*Did you mean .*{suggestion}"):
        create_model(name, num_classes=10)


def test_unknown_student_name_fails_when_the_module_is_built():
    with pytest.raises(ValueError, match=r"Unknown model 'resnt8'\. Did you mean 'resnet8'.*list_models\(\)"):
        DistillationModule("resnt8", "resnet20", KD(), num_classes=10)


# ---------------------------------------------------------------- num_classes disagreements


def test_student_and_teacher_with_different_class_counts():
    with pytest.raises(ValueError, match=r"different numbers of classes: \{'student': 4, 'teacher': 5\}"):
        DistillationModule(TinyNet(num_classes=4), TinyNet(num_classes=5), KD())


def test_explicit_num_classes_disagreeing_with_a_network():
    with pytest.raises(ValueError, match=r"The teacher predicts 5 classes but num_classes=4.*build it for 4"):
        DistillationModule(TinyNet(num_classes=4), TinyNet(num_classes=5), KD(), num_classes=4)


def test_data_with_another_class_count_fails_before_the_first_step(tmp_path):
    module = DistillationModule(TinyNet(num_classes=4), TinyNet(num_classes=4), KD(), lr_scheduler=None)
    counter = _CountSteps()
    data = DigitsDataModule(batch_size=32, image_size=8)  # 10 classes
    with pytest.raises(ValueError, match=r"data module has num_classes=10 .* num_classes=4.* for 10 classes"):
        _trainer(tmp_path, max_epochs=1, callbacks=[counter]).fit(module, data)
    assert counter.batches == 0


# ---------------------------------------------------------------- teacher checkpoints that do not fit


@pytest.fixture
def resnet8_weights(tmp_path) -> Path:
    path = tmp_path / "resnet8_10classes.pt"
    torch.save({"model": create_model("resnet8", num_classes=10).state_dict(), "epoch": 240}, path)
    return path


def test_teacher_checkpoint_of_another_architecture(resnet8_weights):
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)Model 'resnet14' \(num_classes=10\): .*does not match.*missing keys \(36\).*model name matches",
    ):
        DistillationModule("resnet8", "resnet14", KD(), num_classes=10, teacher_weights=str(resnet8_weights))


def test_teacher_checkpoint_with_another_class_count(resnet8_weights):
    with pytest.raises(
        CheckpointMismatchError, match=r"trained with 10 classes .* num_classes=100; pass num_classes=10"
    ):
        DistillationModule("resnet8", "resnet8", KD(), num_classes=100, teacher_weights=str(resnet8_weights))


# ---------------------------------------------------------------- config keys that do not exist


@pytest.mark.parametrize(
    ("overlay", "named"),
    [
        ("trainer:\n  max_epoch: 3\n", "trainer.max_epoch"),
        ("model:\n  init_args:\n    loss:\n      init_args:\n        temprature: 2.0\n", "temprature"),
    ],
)
def test_unknown_config_key_is_named(tmp_path, monkeypatch, capsys, overlay, named):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "overlay.yaml"
    bad.write_text(overlay)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(ROOT / "configs/demo/kd.yaml"), "--config", str(bad)])
    assert exit_info.value.code != 0
    assert named in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was started


# ---------------------------------------------------------------- non-finite loss


class _NaNFromCall(KD):
    """KD whose ``kd`` term turns NaN from the ``nan_from``-th call on (counted from 0)."""

    def __init__(self, nan_from: int) -> None:
        super().__init__(temperature=2.0, ce_weight=1.0, kd_weight=1.0)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, epoch: int = 1):
        terms = super().forward(student_logits, teacher_logits, targets, epoch=epoch)
        if self.calls >= self.nan_from:
            terms["kd"] = terms["kd"] * float("nan")
        self.calls += 1
        return terms


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _SnapshotLast(Callback):
    """Records the bytes hash of ``last.ckpt`` and ``best.ckpt`` as they are when epoch 2 starts."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath
        self.hashes: dict[str, str] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.hashes = {name: _sha256(self.dirpath / name) for name in ("last.ckpt", "best.ckpt")}


def test_non_finite_loss_stops_naming_epoch_and_steps_and_keeps_checkpoints(tmp_path):
    # 4 batches per epoch, a check every 2 steps: steps 0-3 are epoch 1, the NaN comes at step 5 (epoch 2)
    torch.manual_seed(0)
    module = DistillationModule(TinyNet(), TinyNet(width=16), _NaNFromCall(nan_from=5), lr_scheduler=None)
    checkpoints = tmp_path / "checkpoints"
    snapshot = _SnapshotLast(checkpoints)
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/acc1", mode="max", save_last=True),
        snapshot,
    ]
    train, val = separable_loaders(n=64, batch_size=16)
    with pytest.raises(FloatingPointError, match=r"(?i)non-finite .*epoch 2, global steps 4\.\.5.*'kd'"):
        _trainer(tmp_path, max_epochs=3, log_every_n_steps=2, callbacks=callbacks).fit(module, train, val)

    assert snapshot.hashes, "epoch 2 never started"
    for name, digest in snapshot.hashes.items():
        assert _sha256(checkpoints / name) == digest, f"{name} was rewritten by the failed epoch"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_non_finite_loss_in_the_first_window_is_caught_at_once(tmp_path):
    torch.manual_seed(0)
    module = DistillationModule(TinyNet(), TinyNet(width=16), _NaNFromCall(nan_from=0), lr_scheduler=None)
    checkpoints = tmp_path / "checkpoints"
    train, val = separable_loaders(n=64, batch_size=16)
    with pytest.raises(FloatingPointError, match=r"(?i)non-finite .*epoch 1, global steps 0\.\.1"):
        _trainer(
            tmp_path,
            max_epochs=1,
            log_every_n_steps=2,
            callbacks=[ModelCheckpoint(dirpath=checkpoints, save_last=True)],
        ).fit(module, train, val)
    assert not checkpoints.exists() or not any(checkpoints.iterdir())
