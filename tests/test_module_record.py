"""The module's one hyperparameter record, reloading from it, the subclass hook and teacher-free evaluation."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.losses import KD
from tests.helpers.tiny import TinyNet, separable_loaders


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    kwargs.setdefault("callbacks", [ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    kwargs.setdefault("logger", False)
    kwargs.setdefault("max_epochs", 1)
    return Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


def _image_loader(num_classes: int = 4, n: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % num_classes
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _teacher_file(tmp_path: Path, name: str = "resnet20", num_classes: int = 4) -> Path:
    from lightning_kd.models import create_model

    path = tmp_path / "teacher.pth"
    torch.save({"model": create_model(name, num_classes=num_classes).state_dict()}, path)
    return path


def test_record_is_complete_primitive_and_what_loggers_see(tmp_path, monkeypatch):
    teacher = _teacher_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    module = DistillationModule(
        "resnet8",
        "resnet20",
        KD(temperature=2.0, kd_weight=9.0, standardize=True),
        num_classes=4,
        teacher_weights="teacher.pth",  # relative: recorded absolute
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=None,
    )
    record = dict(module.hparams)
    assert record == dict(module.hparams_initial)
    assert record["student"] == "resnet8"
    assert record["teacher"] == "resnet20"
    assert record["num_classes"] == 4
    assert record["teacher_weights"] == str(teacher.resolve())
    assert record["loss.class_path"] == "lightning_kd.losses.kd.KD"
    assert (record["loss.temperature"], record["loss.kd_weight"], record["loss.standardize"]) == (2.0, 9.0, True)
    assert record["optimizer.class_path"] == "torch.optim.adam.Adam"
    assert record["optimizer.lr"] == 1e-3
    assert record["lr_scheduler"] is None


def test_default_factories_are_recorded_by_import_path():
    module = ClassificationModule(TinyNet())
    assert module.hparams["model_class"] == "tests.helpers.tiny.TinyNet"
    assert module.hparams["optimizer.class_path"] == "lightning_kd.optim.cifar_sgd"
    assert module.hparams["lr_scheduler.class_path"] == "lightning_kd.optim.cifar_multistep"


def test_load_from_checkpoint_rebuilds_networks_loss_and_optimizer_by_name(tmp_path):
    teacher = _teacher_file(tmp_path)
    module = DistillationModule(
        "resnet8",
        "resnet20",
        KD(temperature=3.0, kd_weight=6.0, standardize=True),
        num_classes=4,
        teacher_weights=str(teacher),
        optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        lr_scheduler=None,
    )
    loader = _image_loader()
    _trainer(tmp_path).fit(module, loader)
    ckpt = tmp_path / "ckpt" / "last.ckpt"

    loaded = DistillationModule.load_from_checkpoint(ckpt)  # no extra argument
    assert isinstance(loaded.loss, KD)
    assert (loaded.loss.temperature, loaded.loss.kd_weight, loaded.loss.standardize) == (3.0, 6.0, True)
    for key, value in module.student.state_dict().items():
        assert torch.equal(loaded.student.state_dict()[key], value)
    for key, value in module.teacher.state_dict().items():  # from teacher_weights, not from the checkpoint
        assert torch.equal(loaded.teacher.state_dict()[key], value)
    optimizer = loaded.optimizer_factory(list(loaded.trainable_parameters()))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.01
    assert optimizer.defaults["momentum"] == 0.9
    assert dict(loaded.hparams) == dict(module.hparams)

    # keyword arguments override the record
    overridden = DistillationModule.load_from_checkpoint(ckpt, loss=KD(temperature=4.0))
    assert overridden.loss.temperature == 4.0


class _WithPenalty(DistillationModule):
    """A user's subclass: one extra argument and one extra loss term through the public hook."""

    def __init__(self, *args, penalty: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.penalty = penalty

    def compute_loss_terms(self, student_logits, teacher_logits, targets):
        terms = super().compute_loss_terms(student_logits, teacher_logits, targets)
        terms["penalty"] = self.penalty * student_logits.float().pow(2).mean()
        return terms


def test_subclass_hook_adds_a_logged_term_and_subclass_reloads(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    teacher = _teacher_file(tmp_path, "resnet8")
    module = _WithPenalty(
        "resnet8", "resnet8", KD(), num_classes=4, teacher_weights=str(teacher), lr_scheduler=None, penalty=0.25
    )
    loader = _image_loader()
    trainer = _trainer(tmp_path, logger=CSVLogger(tmp_path, name="logs", version=0), max_epochs=2)
    trainer.fit(module, loader, loader)
    logged = set(trainer.logged_metrics)
    assert {"train/penalty_epoch", "train/kd_epoch", "train/ce_epoch", "train/loss_epoch", "train/acc1"} <= logged
    metrics = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/penalty_step" in metrics
    # the loss is the sum of all terms, the penalty included
    epoch = trainer.logged_metrics
    parts = epoch["train/ce_epoch"] + epoch["train/kd_epoch"] + epoch["train/penalty_epoch"]
    assert torch.allclose(epoch["train/loss_epoch"], parts, atol=1e-5)

    loaded = _WithPenalty.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert loaded.penalty == 0.25
    assert loaded.hparams["penalty"] == 0.25


def test_network_given_as_module_must_be_passed_to_load(tmp_path):
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(), lr_scheduler=None)
    train, val = separable_loaders()
    _trainer(tmp_path).fit(module, train, val)
    with pytest.raises(ValueError, match=r"student was given as a module \(tests\.helpers\.tiny\.TinyNet\).*student="):
        DistillationModule.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    loaded = DistillationModule.load_from_checkpoint(
        tmp_path / "ckpt" / "last.ckpt", student=TinyNet(), teacher=TinyNet(width=16)
    )
    assert torch.equal(loaded.student.fc.weight, module.student.fc.weight)


def test_missing_teacher_file_evaluates_the_student_and_refuses_fit(tmp_path):
    with pytest.warns(UserWarning, match="does not exist"):
        module = DistillationModule(
            "resnet8", "resnet20", KD(), num_classes=4, teacher_weights=str(tmp_path / "gone.pth"), lr_scheduler=None
        )
    assert not module.teacher_available
    loader = _image_loader()
    results = _trainer(tmp_path, enable_checkpointing=False, callbacks=[]).test(module, loader)
    assert 0.0 <= results[0]["test/acc1"] <= 1.0
    trainer = _trainer(tmp_path, enable_checkpointing=False, callbacks=[])
    validated = trainer.validate(module, loader)
    assert "val/acc1" in validated[0]
    assert "teacher/val_acc1" not in trainer.logged_metrics
    with pytest.raises(FileNotFoundError, match=r"teacher_weights .*gone\.pth.* does not exist"):
        _trainer(tmp_path, enable_checkpointing=False, callbacks=[]).fit(module, loader)


def test_no_optimizer_may_hold_teacher_parameters(tmp_path):
    class AllParameters(DistillationModule):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)  # the teacher's included: must be refused

    module = AllParameters(TinyNet(), TinyNet(width=16), KD(), lr_scheduler=None)
    train, _ = separable_loaders()
    with pytest.raises(ValueError, match=r"teacher's frozen parameters.*--model\.init_args\.optimizer"):
        _trainer(tmp_path, enable_checkpointing=False, callbacks=[]).fit(module, train)


class _TwoViewLoss(KD):
    num_views = 2


class _SingleViewData(LightningDataModule):
    two_views = False

    def train_dataloader(self) -> DataLoader:
        return separable_loaders()[0]


def test_views_of_loss_and_data_must_agree_before_training(tmp_path):
    module = DistillationModule(TinyNet(), TinyNet(width=16), _TwoViewLoss(), lr_scheduler=None)
    with pytest.raises(ValueError, match=r"takes 2 view\(s\).*gives 1.*two_views: true"):
        _trainer(tmp_path, enable_checkpointing=False, callbacks=[]).fit(module, datamodule=_SingleViewData())
