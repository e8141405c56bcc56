"""DistillationModule / ClassificationModule behaviour under a real Lightning ``fit``."""

from __future__ import annotations

import copy
import csv
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.losses import KD
from tests.helpers.tiny import TinyNet, separable_loaders


def _trainer(tmp_path: Path, max_epochs: int = 2, **kwargs) -> Trainer:
    kwargs.setdefault("logger", CSVLogger(tmp_path, name="logs", version=0))
    kwargs.setdefault("callbacks", [ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    return Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


def _module(**kwargs) -> DistillationModule:
    torch.manual_seed(0)
    kwargs.setdefault("loss", KD(temperature=2.0, kd_weight=9.0, standardize=True))
    return DistillationModule(student=TinyNet(), teacher=TinyNet(width=16), lr_scheduler=None, **kwargs)


def _read_metrics(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


class _ModeRecorder(Callback):
    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.modes.append((pl_module.student.training, any(m.training for m in pl_module.teacher.modules())))


def test_fit_keeps_teacher_frozen_in_eval_and_trains_student(tmp_path):
    module = _module()
    teacher_before = copy.deepcopy(module.teacher.state_dict())
    student_before = copy.deepcopy(module.student.state_dict())
    module.student.eval()  # a student left in eval mode must be switched back to train at each epoch start
    recorder = _ModeRecorder()
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=3, callbacks=[recorder]).fit(module, train, val)

    for key, value in module.teacher.state_dict().items():  # weights and BN buffers, num_batches_tracked too
        assert torch.equal(value, teacher_before[key]), key
    assert all(not m.training for m in module.teacher.modules())
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert recorder.modes
    assert all(student_training and not teacher_training for student_training, teacher_training in recorder.modes)
    changed = [k for k, v in module.student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert "fc.weight" in changed
    assert "bn.running_mean" in changed


def test_train_call_keeps_teacher_in_eval():
    module = _module()
    module.train()
    assert module.student.training
    assert not module.teacher.training
    assert not module.teacher.bn.training


def test_optimizer_holds_student_and_loss_parameters_only():
    module = _module()
    optimizer = module.configure_optimizers()
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in module.student.parameters()}
    assert not params & {id(p) for p in module.teacher.parameters()}


def test_default_optimizer_and_schedule_follow_reference_recipe():
    module = DistillationModule(student=TinyNet(), teacher=TinyNet(), loss=KD())
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)
    assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)
    assert dict(scheduler.milestones) == {150: 1, 180: 1, 210: 1}
    assert scheduler.gamma == 0.1
    assert config["lr_scheduler"]["interval"] == "epoch"


def test_logged_metrics(tmp_path):
    module = _module()
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=3).fit(module, train, val)
    rows = _read_metrics(tmp_path)
    columns = set(rows[0])
    expected = {"train/loss_step", "train/ce_epoch", "train/kd_epoch", "train/acc1", "val/acc1", "val/acc5"}
    assert expected | {"val/loss", "val/acc1_best", "teacher/val_acc1"} <= columns
    teacher = [float(r["teacher/val_acc1"]) for r in rows if r["teacher/val_acc1"]]
    assert len(teacher) == 1, "the teacher's accuracy is logged once"
    acc = [float(r["val/acc1"]) for r in rows if r["val/acc1"]]
    best = [float(r["val/acc1_best"]) for r in rows if r["val/acc1_best"]]
    assert len(acc) == len(best) == 3
    assert all(0.0 <= a <= 1.0 for a in acc + best + teacher)
    assert best == [max(acc[: i + 1]) for i in range(3)]
    # sum of the weighted terms is the loss
    last = next(r for r in reversed(rows) if r["train/loss_epoch"])
    total = float(last["train/ce_epoch"]) + float(last["train/kd_epoch"])
    assert float(last["train/loss_epoch"]) == pytest.approx(total, rel=1e-5)


def test_checkpoint_has_no_teacher_and_reloads_for_test_and_resume(tmp_path):
    module = _module()
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=1).fit(module, train, val)
    ckpt_path = tmp_path / "ckpt" / "last.ckpt"

    checkpoint = torch.load(ckpt_path, weights_only=True)  # primitives only in the hyperparameters
    keys = checkpoint["state_dict"].keys()
    assert keys
    assert not [k for k in keys if k.startswith("teacher.")]
    assert any(k.startswith("student.") for k in keys)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["loss.class_path"] == "lightning_kd.losses.kd.KD"
    assert hparams["loss.temperature"] == 2.0
    assert hparams["loss.standardize"] is True

    # test: a fresh module with its teacher loads the student-only checkpoint without complaint
    fresh = _module()
    fresh.teacher.load_state_dict(module.teacher.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path / "test", logger=False, callbacks=[], enable_checkpointing=False)
        results = trainer.test(fresh, val, ckpt_path=ckpt_path)
    assert not [w for w in caught if "keys" in str(w.message) or "teacher" in str(w.message)]
    assert 0.0 <= results[0]["test/acc1"] <= 1.0
    for key, value in module.student.state_dict().items():
        assert torch.equal(fresh.student.state_dict()[key], value)

    # resume: one more epoch from the checkpoint
    resumed = _module()
    trainer = _trainer(tmp_path / "resume", max_epochs=2, logger=False, callbacks=[])
    trainer.fit(resumed, train, val, ckpt_path=ckpt_path)
    assert trainer.current_epoch == 2

    # load_from_checkpoint, the networks given again
    loaded = DistillationModule.load_from_checkpoint(
        ckpt_path, student=TinyNet(), teacher=TinyNet(width=16), loss=KD(), weights_only=True
    )
    assert torch.equal(loaded.student.fc.weight, module.student.fc.weight)


def test_save_teacher_keeps_teacher_keys(tmp_path):
    module = _module(save_teacher=True)
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=1).fit(module, train, val)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert "teacher.fc.weight" in state


def test_strict_loading_still_fails_on_other_keys():
    module = _module()
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")}
    assert module.load_state_dict(state).missing_keys == []
    missing = dict(state)
    del missing["student.fc.bias"]
    with pytest.raises(RuntimeError, match=r"missing keys \['student.fc.bias'\], unexpected keys \[\]"):
        module.load_state_dict(missing)
    extra = dict(state, **{"student.extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"unexpected keys \['student.extra.weight'\]"):
        module.load_state_dict(extra)
    # with teacher keys present, a missing teacher key is an error too
    partial_teacher = dict(state, **{"teacher.fc.weight": module.teacher.fc.weight})
    with pytest.raises(RuntimeError, match=r"missing keys \[.*'teacher.fc.bias'"):
        module.load_state_dict(partial_teacher)


def test_teacher_weights_from_classification_checkpoint(tmp_path):
    torch.manual_seed(1)
    teacher_module = ClassificationModule(TinyNet(width=16), lr_scheduler=None)
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=1).fit(teacher_module, train, val)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["num_classes"] == 4

    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(), teacher_weights=str(ckpt))
    for key, value in teacher_module.model.state_dict().items():
        assert torch.equal(module.teacher.state_dict()[key], value)
    assert not module.teacher.training


def test_model_names_are_built_with_num_classes():
    module = DistillationModule("resnet8", "resnet20", KD(), num_classes=10, teacher_weights=None)
    assert module.student.num_classes == module.teacher.num_classes == 10
    assert module.hparams["student"] == "resnet8"
    assert module.hparams["teacher"] == "resnet20"
    out = module(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_num_classes_inferred_from_modules():
    assert _module().num_classes == 4
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7))
    assert ClassificationModule(plain).num_classes == 7


def test_num_classes_errors():
    with pytest.raises(ValueError, match=r"num_classes is required when neither network tells it"):
        DistillationModule("resnet8", "resnet20", KD())
    with pytest.raises(ValueError, match=r"The networks predict different numbers of classes"):
        DistillationModule(TinyNet(num_classes=4), TinyNet(num_classes=5), KD())
    with pytest.raises(ValueError, match=r"The student predicts 4 classes but num_classes=10"):
        DistillationModule(TinyNet(num_classes=4), "resnet8", KD(), num_classes=10)
    with pytest.raises(ValueError, match=r"num_classes is required for this model"):
        ClassificationModule("resnet8")
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2, got 1"):
        ClassificationModule("resnet8", num_classes=1)
    with pytest.raises(TypeError, match=r"loss must be a DistillationLoss"):
        DistillationModule(TinyNet(), TinyNet(), nn.CrossEntropyLoss())


def test_data_with_other_class_count_is_rejected(tmp_path):
    from lightning_kd.data import DigitsDataModule

    module = DistillationModule(TinyNet(num_classes=4), TinyNet(num_classes=4), KD())
    with pytest.raises(ValueError, match=r"data module has num_classes=10 but the model was built with num_classes=4"):
        _trainer(tmp_path, max_epochs=1, logger=False, callbacks=[]).fit(module, datamodule=DigitsDataModule())


def test_teacher_by_name_without_weights_warns():
    with pytest.warns(UserWarning, match=r"The teacher 'resnet20' is built with random weights"):
        DistillationModule("resnet8", "resnet20", KD(), num_classes=10)


def test_classification_module_trains(tmp_path):
    torch.manual_seed(0)
    module = ClassificationModule(TinyNet(), lr_scheduler=None)
    train, val = separable_loaders()
    _trainer(tmp_path, max_epochs=3).fit(module, train, val)
    rows = _read_metrics(tmp_path)
    assert {"train/loss_epoch", "train/ce_epoch", "val/acc1", "val/acc1_best"} <= set(rows[0])
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    # the network under `model.` (so the checkpoint loads as teacher_weights) and the best-so-far tracker, which a
    # resumed run continues
    network_keys = {f"model.{k}" for k in module.model.state_dict()}
    assert set(state["state_dict"]) == network_keys | {"val_acc1_best.max_value"}
    best = max(float(r["val/acc1"]) for r in rows if r.get("val/acc1"))
    assert float(state["state_dict"]["val_acc1_best.max_value"]) == pytest.approx(best)


def test_no_eval_mode_warning_for_the_teacher_but_for_a_frozen_student_module(tmp_path):
    train, val = separable_loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path / "a", max_epochs=1, logger=False, callbacks=[]).fit(_module(), train, val)
    assert not [w for w in caught if "eval mode at the start of training" in str(w.message)]

    module = _module()
    module.student.bn.eval()  # one student module frozen by mistake: the user must still hear about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path / "b", max_epochs=1, logger=False, callbacks=[]).fit(module, train, val)
    assert [w for w in caught if "eval mode at the start of training" in str(w.message)]


def test_library_weights_need_a_model_name():
    with pytest.raises(ValueError, match=r"teacher weights 'torchvision:DEFAULT' name library weights"):
        DistillationModule(TinyNet(), TinyNet(), KD(), teacher_weights="torchvision:DEFAULT")


def test_student_weights_load_into_a_module(tmp_path):
    source = TinyNet()
    torch.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "student.pth")
    module = DistillationModule(TinyNet(), TinyNet(), KD(), student_weights=str(tmp_path / "student.pth"))
    assert torch.equal(module.student.fc.weight, source.fc.weight)
