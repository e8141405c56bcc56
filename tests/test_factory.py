"""create_model: registry names, torchvision/timm prefixes, weights specs and checkpoint paths (no downloads)."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest
import torch
import torchvision
from torch import nn

from lightning_kd.models import create_model
from lightning_kd.models._registry import list_models, register_model
from lightning_kd.models.checkpoint import CheckpointMismatchError
from lightning_kd.models.external import resolve_torchvision_weights

_TINY = "lkd_test_factory_tinynet"


class _TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def lkd_test_factory_tinynet(num_classes: int = 100) -> nn.Module:
    """A registry entry of the tests' own, so these tests do not depend on the CIFAR zoo."""
    return _TinyNet(num_classes)


# The registry refuses duplicate names; this module is imported once per session, but guard anyway.
if _TINY not in list_models():
    register_model(lkd_test_factory_tinynet)


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any pretrained-weight download fail loudly; returns the list of attempted downloads."""
    attempts: list[str] = []

    def refuse(self: torchvision.models.WeightsEnum, *args: object, **kwargs: object) -> dict:
        attempts.append(str(self))
        raise AssertionError(f"download attempted: {self}")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)
    return attempts


# --- registry names ------------------------------------------------------------------------------------------


def test_registry_name_builds_bare_network() -> None:
    model = create_model(_TINY, num_classes=7)
    assert isinstance(model, _TinyNet)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    assert create_model(_TINY).fc.out_features == 100  # the documented default


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10", None])
def test_num_classes_must_be_positive_int(num_classes: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"num_classes must be a positive integer, got {num_classes!r}")):
        create_model(_TINY, num_classes=num_classes)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown model 'lkd_test_factory_tinynt'\. Did you mean .*'lkd_test_factory_tinynet'"
    ):
        create_model("lkd_test_factory_tinynt")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Model name must be a non-empty string, got ''"),
        ("torchvision/", "Model name 'torchvision/' lacks the torchvision model name"),
        ("timm/ ", "Model name 'timm/ ' lacks the timm model name"),
    ],
)
def test_empty_names_are_rejected(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(name)


# --- checkpoint paths ----------------------------------------------------------------------------------------


def test_checkpoint_path_round_trip(tmp_path: pathlib.Path) -> None:
    saved = create_model(_TINY, num_classes=5)
    with torch.no_grad():
        for tensor in saved.state_dict().values():
            tensor.add_(1)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": saved.state_dict(), "epoch": 240, "accuracy": 71.5}, path)
    for weights in (str(path), path):
        loaded = create_model(_TINY, num_classes=5, weights=weights)
        assert loaded.state_dict().keys() == saved.state_dict().keys()
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_with_other_num_classes_is_an_error(tmp_path: pathlib.Path) -> None:
    torch.save({"model": create_model(_TINY, num_classes=100).state_dict()}, tmp_path / "c100.pth")
    with pytest.raises(
        CheckpointMismatchError, match="trained with 100 classes but the model was built with num_classes=10"
    ):
        create_model(_TINY, num_classes=10, weights=str(tmp_path / "c100.pth"))


def test_zoo_checkpoint_num_classes_mismatch(tmp_path: pathlib.Path) -> None:
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict(), "epoch": 240}, tmp_path / "r8.pth")
    assert create_model("resnet8", num_classes=100, weights=str(tmp_path / "r8.pth")) is not None
    with pytest.raises(
        CheckpointMismatchError, match=r"trained with 100 classes .* num_classes=10; pass num_classes=100"
    ):
        create_model("resnet8", num_classes=10, weights=str(tmp_path / "r8.pth"))


def test_missing_checkpoint_path(tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match=re.escape(f"Checkpoint file not found: {missing!r}")):
        create_model(_TINY, weights=missing)


@pytest.mark.parametrize(
    ("name", "weights"),
    [(_TINY, "torchvision:DEFAULT"), (_TINY, "timm:pretrained"), ("timm/resnet10t", "torchvision:DEFAULT")],
)
def test_library_weights_need_matching_prefix(name: str, weights: str, no_downloads: list[str]) -> None:
    library = weights.split(":")[0]
    with pytest.raises(ValueError, match=re.escape(f"only apply to '{library}/<name>' models, not {name!r}")):
        create_model(name, num_classes=1000, weights=weights)
    assert no_downloads == []


# --- torchvision ---------------------------------------------------------------------------------------------


def test_torchvision_model_builds_without_download(no_downloads: list[str]) -> None:
    model = create_model("torchvision/resnet18", num_classes=10)
    assert isinstance(model, torchvision.models.ResNet)
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert not any(key.startswith("module.") for key in model.state_dict())
    assert no_downloads == []


def test_unknown_torchvision_name_suggests_close_names() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown torchvision classification model 'resnet19'\. Did you mean .*'torchvision/resnet18'"
    ):
        create_model("torchvision/resnet19", num_classes=10)


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("resnet34", "torchvision:ResNet34_Weights.IMAGENET1K_V1", torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
        ("resnet18", "torchvision:DEFAULT", torchvision.models.ResNet18_Weights.DEFAULT),
        ("resnet50", "torchvision:IMAGENET1K_V2", torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
        ("resnet50", "ResNet50_Weights.IMAGENET1K_V1", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    ],
)
def test_torchvision_weights_spec_resolves(
    name: str, spec: str, expected: torchvision.models.WeightsEnum, no_downloads: list[str]
) -> None:
    assert resolve_torchvision_weights(name, spec) is expected
    assert no_downloads == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "torchvision:ResNet34_Weights.IMAGENET1K_V1",
            "names ResNet34_Weights, but torchvision model 'resnet18' takes ResNet18_Weights",
        ),
        (
            "torchvision:IMAGENET1K_V9",
            "Unknown torchvision weights 'torchvision:IMAGENET1K_V9' for model 'resnet18'; "
            "available: 'torchvision:IMAGENET1K_V1', 'torchvision:DEFAULT'",
        ),
    ],
)
def test_bad_torchvision_weights_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_torchvision_weights("resnet18", spec)


def test_torchvision_weights_class_mismatch_errors_before_download(no_downloads: list[str]) -> None:
    with pytest.raises(
        ValueError, match=re.escape("trained with 1000 classes but num_classes=10; pass num_classes=1000")
    ):
        create_model("torchvision/resnet34", num_classes=10, weights="torchvision:ResNet34_Weights.IMAGENET1K_V1")
    assert no_downloads == []


def test_torchvision_pretrained_weights_reach_the_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand in for the download with known weights, to see that the resolved enum is what the builder loads.
    torch.manual_seed(0)
    known = torchvision.models.resnet18(num_classes=1000).state_dict()
    requested: list[object] = []

    def fake_get_state_dict(self: torchvision.models.WeightsEnum, *args: object, **kwargs: object) -> dict:
        requested.append(self)
        return known

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_get_state_dict)
    model = create_model("torchvision/resnet18", num_classes=1000, weights="torchvision:DEFAULT")
    assert requested == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    torch.testing.assert_close(model.fc.weight, known["fc.weight"], rtol=0, atol=0)


# --- timm ----------------------------------------------------------------------------------------------------


def test_timm_model_builds_without_download() -> None:
    model = create_model("timm/resnet10t", num_classes=10)
    assert model.get_classifier().out_features == 10
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_unknown_timm_name_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown timm model 'resnet10u'\. Did you mean .*'timm/resnet10t'"):
        create_model("timm/resnet10u", num_classes=10)


def test_timm_bad_spec_and_tag() -> None:
    with pytest.raises(ValueError, match=re.escape("Unknown timm weights spec 'timm:imagenet'; use 'timm:pretrained'")):
        create_model("timm/resnet10t", num_classes=1000, weights="timm:imagenet")
    with pytest.raises(ValueError, match=re.escape("Unknown timm pretrained tag in 'resnet10t.bogus'")):
        create_model("timm/resnet10t.bogus", num_classes=1000)


def test_timm_pretrained_class_mismatch_errors_before_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("download attempted")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    with pytest.raises(ValueError, match=re.escape("resnet10t' were trained with 1000 classes but num_classes=10")):
        create_model("timm/resnet10t", num_classes=10, weights="timm:pretrained")


def test_timm_pretrained_spec_requests_pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder

    loaded: list[str] = []

    def fake_load_pretrained(model: nn.Module, pretrained_cfg: dict | None = None, **kwargs: object) -> None:
        loaded.append(pretrained_cfg["tag"])

    monkeypatch.setattr(timm.models._builder, "load_pretrained", fake_load_pretrained)
    model = create_model("timm/resnet10t", num_classes=1000, weights="timm:pretrained")
    assert loaded == ["c3_in1k"]
    assert model.get_classifier().out_features == 1000


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=re.escape('pip install "lightning-kd[timm]"')):
        create_model("timm/resnet18", num_classes=10)
