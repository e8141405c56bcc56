"""Checkpoint loading: every accepted file layout, and a clear error for everything else."""

from __future__ import annotations

import collections
import pathlib
import re

import pytest
import torch
from torch import nn

from lightning_kd.models.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_state_dict_from_file,
    load_weights,
)


class TinyNet(nn.Module):
    """Conv + BN + linear classifier: parameters and buffers, like the zoo's networks."""

    def __init__(self, num_classes: int = 10, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def _trained_net(num_classes: int = 10, seed: int = 0) -> TinyNet:
    """A TinyNet whose every entry (running stats included) differs from a fresh one's."""
    torch.manual_seed(seed)
    net = TinyNet(num_classes)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.copy_(torch.randn_like(tensor.float()).abs().to(tensor.dtype) + 1)
    return net


def _assert_same_weights(model: nn.Module, reference: nn.Module) -> None:
    got, want = model.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def _lightning_checkpoint(state_dict: dict[str, torch.Tensor], hyper_parameters: dict) -> dict:
    """A dict laid out exactly as ``Trainer.save_checkpoint`` writes it (optimizer/scheduler states included)."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.05, momentum=0.9, weight_decay=5e-4)
    param.grad = torch.ones(2)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[150, 180, 210], gamma=0.1)
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": collections.OrderedDict(state_dict),
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_loop.state_dict": {"_batches_that_stepped": 1200},
                "epoch_progress": {"total": {"ready": 4, "completed": 3}, "current": {"ready": 4, "completed": 3}},
            },
            "validate_loop": {"state_dict": {}},
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/acc1', 'mode': 'max', 'every_n_train_steps': 0, 'every_n_epochs': 1, "
            "'train_time_interval': None}": {
                "monitor": "val/acc1",
                "best_model_score": torch.tensor(0.71),
                "best_model_path": "/runs/epoch=2.ckpt",
                "best_k_models": {"/runs/epoch=2.ckpt": torch.tensor(0.71)},
                "dirpath": "/runs",
            }
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def _prefixed(prefix: str, net: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": value for key, value in net.state_dict().items()}


# --- accepted formats ----------------------------------------------------------------------------------------


def test_reference_format_loads(tmp_path: pathlib.Path) -> None:
    saved = _trained_net()
    path = tmp_path / "ckpt_epoch_240.pth"
    optimizer = torch.optim.SGD(saved.parameters(), lr=0.05, momentum=0.9)
    torch.save(
        {
            "model": saved.state_dict(),
            "epoch": 240,
            "accuracy": torch.tensor(72.34),
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    model = TinyNet()
    assert load_weights(model, path) is model
    _assert_same_weights(model, saved)


def test_plain_state_dict_loads(tmp_path: pathlib.Path) -> None:
    saved = _trained_net()
    torch.save(saved.state_dict(), tmp_path / "plain.pt")
    state_dict = load_state_dict_from_file(str(tmp_path / "plain.pt"))
    assert list(state_dict) == list(saved.state_dict())
    _assert_same_weights(load_weights(TinyNet(), tmp_path / "plain.pt"), saved)


def test_lightning_classification_checkpoint_takes_model_prefix(tmp_path: pathlib.Path) -> None:
    saved = _trained_net()
    hparams = {"model": "resnet8", "num_classes": 10, "lr": 0.05, "milestones": [150, 180, 210]}
    torch.save(_lightning_checkpoint(_prefixed("model.", saved), hparams), tmp_path / "last.ckpt")
    _assert_same_weights(load_weights(TinyNet(), tmp_path / "last.ckpt"), saved)


def test_lightning_distillation_checkpoint_takes_student(tmp_path: pathlib.Path) -> None:
    student, teacher = _trained_net(seed=1), _trained_net(seed=2)
    state_dict = {**_prefixed("student.", student), **_prefixed("teacher.", teacher), "loss.theta": torch.ones(1)}
    hparams = {"student": "resnet8", "teacher": "resnet32x4", "loss.kd_weight": 0.9, "loss.standardize": True}
    torch.save(_lightning_checkpoint(state_dict, hparams), tmp_path / "kd.ckpt")
    loaded = load_state_dict_from_file(tmp_path / "kd.ckpt")
    assert set(loaded) == set(student.state_dict())
    _assert_same_weights(load_weights(TinyNet(), tmp_path / "kd.ckpt"), student)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped(tmp_path: pathlib.Path, prefix: str) -> None:
    saved = _trained_net()
    torch.save({"model": _prefixed(prefix, saved), "epoch": 240}, tmp_path / "wrapped.pth")
    assert list(load_state_dict_from_file(tmp_path / "wrapped.pth")) == list(saved.state_dict())
    _assert_same_weights(load_weights(TinyNet(), tmp_path / "wrapped.pth"), saved)


def test_wrapper_prefix_inside_lightning_student(tmp_path: pathlib.Path) -> None:
    saved = _trained_net()
    torch.save(_lightning_checkpoint(_prefixed("student._orig_mod.", saved), {}), tmp_path / "compiled.ckpt")
    _assert_same_weights(load_weights(TinyNet(), tmp_path / "compiled.ckpt"), saved)


def test_non_strict_tolerates_extra_and_missing_keys(tmp_path: pathlib.Path) -> None:
    saved = _trained_net()
    state_dict = {k: v for k, v in saved.state_dict().items() if k != "fc.bias"} | {"extra.weight": torch.ones(1)}
    torch.save(state_dict, tmp_path / "partial.pt")
    model = load_weights(TinyNet(), tmp_path / "partial.pt", strict=False)
    torch.testing.assert_close(model.fc.weight, saved.fc.weight)


# --- errors --------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(f"Checkpoint file not found: '{path}'")):
        load_weights(TinyNet(), path)


def test_wrong_keys_are_named(tmp_path: pathlib.Path) -> None:
    state_dict = dict(_trained_net().state_dict())
    state_dict["head.weight"] = state_dict.pop("fc.weight")
    torch.save(state_dict, tmp_path / "renamed.pt")
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): 'fc.weight'") as info:
        load_weights(model, tmp_path / "renamed.pt")
    assert "unexpected keys (1): 'head.weight'" in str(info.value)
    assert "num_classes" not in str(info.value)
    for key, value in model.state_dict().items():  # nothing was copied
        torch.testing.assert_close(value, before[key])


def test_long_key_lists_are_truncated(tmp_path: pathlib.Path) -> None:
    torch.save({f"junk{i}.weight": torch.zeros(1) for i in range(25)}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(25\): 'junk0.weight'.*\.\.\. and 15 more"):
        load_weights(TinyNet(), tmp_path / "junk.pt")


def test_wrong_shapes_are_named(tmp_path: pathlib.Path) -> None:
    torch.save(TinyNet(width=8).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(
        CheckpointMismatchError, match=re.escape("'conv.weight' checkpoint [8, 3, 3, 3] vs model [4, 3, 3, 3]")
    ) as info:
        load_weights(TinyNet(width=4), tmp_path / "wide.pt")
    assert "shape mismatches (6)" in str(info.value)
    assert "num_classes" not in str(info.value)


def test_num_classes_mismatch_names_both_numbers(tmp_path: pathlib.Path) -> None:
    torch.save({"model": TinyNet(num_classes=100).state_dict(), "epoch": 240}, tmp_path / "c100.pth")
    expected = (
        "the checkpoint was trained with 100 classes but the model was built with num_classes=10; pass num_classes=100"
    )
    with pytest.raises(CheckpointMismatchError, match=re.escape(expected)):
        load_weights(TinyNet(num_classes=10), tmp_path / "c100.pth")


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        ({"model": {}, "epoch": 240}, "'model': dict, 'epoch': int"),
        ({"weights": [torch.zeros(1)]}, "'weights': list"),
        ([torch.zeros(1)], "holds a list"),
    ],
)
def test_unknown_structure(tmp_path: pathlib.Path, payload: object, found: str) -> None:
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(CheckpointFormatError, match=re.escape(found)) as info:
        load_state_dict_from_file(tmp_path / "odd.pt")
    assert "Accepted formats" in str(info.value)


def test_lightning_checkpoint_of_another_module(tmp_path: pathlib.Path) -> None:
    torch.save(_lightning_checkpoint(_prefixed("net.", TinyNet()), {}), tmp_path / "other.ckpt")
    with pytest.raises(CheckpointFormatError, match=r"no 'model\.' or 'student\.' entries.*'net'"):
        load_state_dict_from_file(tmp_path / "other.ckpt")


def test_not_a_checkpoint(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.txt").write_text("hello world")
    with pytest.raises(CheckpointFormatError, match="is not a readable PyTorch checkpoint"):
        load_state_dict_from_file(tmp_path / "notes.txt")


class _Payload:
    """Unpickling this object would call ``Path.touch(marker)``: stands in for arbitrary code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_code_is_refused_not_run(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload(marker), "epoch": 240}, path)
    assert not marker.exists()
    with pytest.raises(
        UnsafeCheckpointError, match="contains pickled Python objects that are not plain tensors"
    ) as info:
        load_weights(TinyNet(), path)
    message = str(info.value)
    assert "NOT loaded or executed" in message
    assert "weights_only=False" in message
    assert "torch.save({'model': model.state_dict()}" in message
    assert not marker.exists()
    # Control: the payload is live, so the check above is meaningful (only this test's own file is unpickled).
    torch.load(path, weights_only=False)
    assert marker.exists()
