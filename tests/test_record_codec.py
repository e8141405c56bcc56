"""The record codec: one encoder and one decoder of the flat record, for the module, the CLI and export alike."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

import lightning_kd
from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd._record import (
    DATA_RECORD_KEY,
    describe_factory,
    init_kwargs_from_record,
    object_configs,
    record_shape,
    subclass_init_args,
)
from lightning_kd.apps.model_from_checkpoint import model_config_from_record
from lightning_kd.losses import CTKD, DKD, KD, MLKD
from tests.helpers.tiny import TinyNet, separable_loaders


class _KDWithNorm(KD):
    def __init__(self, temperature: float = 2.0, norm_weight: float = 1e-3, **kwargs) -> None:
        super().__init__(temperature=temperature, **kwargs)
        self.norm_weight = float(norm_weight)


class _Unstored(KD):
    def __init__(self, gamma: float = 0.5) -> None:
        super().__init__()
        self._gamma = gamma


class _RecordedByHand(KD):
    def __init__(self, gamma: float = 0.5) -> None:
        super().__init__()
        self._gamma = gamma
        self._record_hparams(gamma=gamma)


class _TensorArgument(KD):
    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale))


@pytest.mark.parametrize("loss_cls", [KD, DKD, MLKD, CTKD])
def test_every_constructor_argument_of_a_shipped_loss_is_in_its_record(loss_cls):
    loss = loss_cls()
    names = [n for n in inspect.signature(loss_cls.__init__).parameters if n != "self"]
    record = loss.hparams_dict()
    assert sorted(record) == sorted(["class_path", *names])
    assert all(record[n] == getattr(loss, n) for n in names)
    # and the record rebuilds an equal loss
    rebuilt = loss_cls(**{n: record[n] for n in names})
    assert rebuilt.hparams_dict() == record


def test_a_subclass_argument_is_recorded_from_the_signature_and_reloads():
    loss = _KDWithNorm(norm_weight=0.25, kd_weight=9.0, standardize=True)
    record = loss.hparams_dict()
    assert record == {
        "class_path": f"{__name__}._KDWithNorm",
        "temperature": 2.0,
        "norm_weight": 0.25,
        "ce_weight": 0.1,
        "kd_weight": 9.0,
        "standardize": True,
    }
    assert "norm_weight=0.25" in repr(loss)


def test_an_argument_the_loss_does_not_keep_is_an_error_naming_it():
    with pytest.raises(TypeError, match=r"_Unstored.__init__ takes 'gamma'.*self\.gamma.*_record_hparams\(gamma="):
        _Unstored().hparams_dict()
    assert _RecordedByHand(gamma=0.75).hparams_dict()["gamma"] == 0.75


def test_a_non_primitive_argument_is_an_error_naming_it():
    with pytest.raises(TypeError, match=r"_TensorArgument\.scale must be a primitive.*got Tensor"):
        _TensorArgument().hparams_dict()
    with pytest.raises(TypeError, match=r"KD\.bad must be a primitive.*got dict"):
        KD()._record_hparams(bad={"a": 1})


def test_object_configs_decode_each_prefix_once():
    record = {
        "loss.class_path": "lightning_kd.losses.kd.KD",
        "loss.temperature": 2.0,
        **describe_factory("optimizer", functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)),
        **describe_factory("lr_scheduler", None),
        "student": "resnet8",
    }
    assert object_configs(record) == {
        "loss": {"class_path": "lightning_kd.losses.kd.KD", "init_args": {"temperature": 2.0}},
        "optimizer": {"class_path": "torch.optim.sgd.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
        "lr_scheduler": None,
    }
    assert object_configs({"student": "resnet8"}) == {}


def test_a_lambda_factory_is_recorded_as_not_reloadable_and_the_error_names_it():
    record = {"student": "resnet8", "teacher": "resnet8", **describe_factory("optimizer", lambda p: None)}
    assert record["optimizer.reloadable"] is False
    with pytest.raises(ValueError, match=r"optimizer was a .*<lambda>.*pass it to load_from_checkpoint"):
        init_kwargs_from_record(DistillationModule, record, {}, ("student", "teacher"))
    # passed again, the record's lambda is not read
    kwargs = init_kwargs_from_record(DistillationModule, record, {"optimizer": None}, ("student", "teacher"))
    assert kwargs["optimizer"] is None
    with pytest.raises(ValueError, match=r"optimizer was a .*<lambda>.*--config or --model"):
        model_config_from_record(record)


def test_load_from_checkpoint_and_the_cli_decode_the_same_record(tmp_path):
    module = DistillationModule(
        TinyNet(),
        TinyNet(width=16),
        DKD(alpha=2.0, beta=3.0, temperature=2.0, warmup=5, standardize=True),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=None,
    )
    record = dict(module.hparams)
    record.pop("student_class"), record.pop("teacher_class")
    record.update(student="resnet8", teacher="resnet8")
    kwargs = init_kwargs_from_record(DistillationModule, record, {}, ("student", "teacher"))
    config = model_config_from_record(record)["init_args"]
    assert kwargs["loss"].hparams_dict() == {"class_path": config["loss"]["class_path"], **config["loss"]["init_args"]}
    assert kwargs["optimizer"].func is torch.optim.Adam
    assert kwargs["optimizer"].keywords == {"lr": 1e-3}
    assert config["optimizer"] == {"class_path": "torch.optim.adam.Adam", "init_args": {"lr": 1e-3}}
    assert kwargs["lr_scheduler"] is None
    assert config["lr_scheduler"] is None


def test_record_shape_tells_the_module_and_its_networks():
    assert record_shape({"student": "a", "teacher": "b"}) == (("student", "teacher"), "lightning_kd.DistillationModule")
    assert record_shape({"student_class": "x.Net", "teacher": ["a", "b"]})[0] == ("student", "teacher")
    assert record_shape({"model": "resnet8"}) == (("model",), "lightning_kd.ClassificationModule")
    assert record_shape({"lr": 0.1}) is None
    for networks, class_path in [record_shape({"student": "a", "teacher": "b"}), record_shape({"model": "a"})]:
        module = getattr(lightning_kd, class_path.rpartition(".")[2])
        assert set(networks) == set(module.record_objects())


def test_the_data_record_key_is_spelled_once_in_the_package():
    package = Path(lightning_kd.__file__).parent
    spelled = [p for p in package.rglob("*.py") if f'"{DATA_RECORD_KEY}"' in p.read_text()]
    assert [p.relative_to(package).as_posix() for p in spelled] == ["_record.py"]


class _Base:
    def __init__(self, a: int = 1) -> None:
        self.extras = subclass_init_args(self, inspect.currentframe(), {"a"})


class _Child(_Base):
    def __init__(self, b: float = 2.0, c: str = "x", net: object = None) -> None:
        super().__init__(a=1)


class _GrandChild(_Child):
    def __init__(self, d: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)


def test_subclass_arguments_are_found_by_lightnings_frame_walk():
    # pins lightning.pytorch.utilities.parsing.collect_init_args, an undocumented helper (see _record.py)
    assert _Child(b=3.0, c="y", net=object()).extras == {"b": 3.0, "c": "y"}  # the object is not a primitive
    assert _GrandChild(d=False, b=4.0).extras == {"b": 4.0, "c": "x", "net": None, "d": False}
    assert _Base().extras == {}


def test_a_classifier_record_reloads_through_the_codec(tmp_path):
    module = ClassificationModule(TinyNet(), optimizer=functools.partial(torch.optim.SGD, lr=0.05), lr_scheduler=None)
    train, val = separable_loaders()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    trainer.fit(module, train, val)
    loaded = ClassificationModule.load_from_checkpoint(tmp_path / "last.ckpt", model=TinyNet())
    assert loaded.optimizer_factory.keywords == {"lr": 0.05}
    assert torch.equal(loaded.model.fc.weight, module.model.fc.weight)
