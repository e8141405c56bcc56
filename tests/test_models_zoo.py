"""The CIFAR-100 zoo against the reference definitions (state-dict layout, golden logits) plus the model contract.

Reference data (verbatim copies of ``../shared/reference``) lives in ``tests/reference``:
``cifar_zoo_state_dicts.json`` (keys, shapes, parameter counts) and ``cifar_zoo_golden.json`` (logits of the
reference code for deterministic weights).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_kd.models import list_models
from lightning_kd.models._registry import get_model_factory
from lightning_kd.models.cifar._base import FeatureClassifier
from lightning_kd.models.mobilenetv1 import MobileNetV1

_REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
_STATE_DICTS: dict[str, Any] = json.loads((_REFERENCE_DIR / "cifar_zoo_state_dicts.json").read_text())
_GOLDEN: dict[str, Any] = json.loads((_REFERENCE_DIR / "cifar_zoo_golden.json").read_text())["models"]
ZOO = sorted(_STATE_DICTS, key=str.lower)
GOLDEN_RTOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # These batch-2 forwards are too small to gain from intra-op threads, and on a shared CPU the
    # threads' spinning made this module ~15x slower; restore the setting for the rest of the session.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    _model.cache_clear()  # the cached models (about 1 GB with gradients) must not outlive this module


@functools.cache
def _model(name: str, num_classes: int) -> FeatureClassifier:
    # Built once per (name, num_classes) for the whole module: the large models dominate the runtime.
    return get_model_factory(name)(num_classes=num_classes)


def _golden_state_dict(reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fill a state dict as the golden file's "procedure" describes (walk order matters: one generator)."""
    g = torch.Generator().manual_seed(0)
    filled = {}
    for key, value in reference.items():
        if not value.is_floating_point():
            filled[key] = value
        elif key.endswith("running_var"):
            filled[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            filled[key] = torch.randn(value.shape, generator=g) * 0.1
        elif value.dim() == 1:
            filled[key] = (1.0 if key.endswith("weight") else 0.0) + torch.randn(value.shape, generator=g) * 0.1
        else:
            filled[key] = torch.randn(value.shape, generator=g) / math.sqrt(value[0].numel())
    return filled


def test_registry_lists_the_whole_zoo() -> None:
    assert len(ZOO) == 23
    assert set(ZOO) <= set(list_models())
    assert "MobileNetV1" in list_models()


@pytest.mark.parametrize("name", ZOO)
def test_state_dict_matches_reference(name: str) -> None:
    model = _model(name, 100)
    expected = _STATE_DICTS[name]
    state = model.state_dict()
    assert list(state) == list(expected["state_dict"])
    assert {k: list(v.shape) for k, v in state.items()} == expected["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == expected["params"]


@pytest.mark.parametrize("name", ZOO)
def test_golden_logits(name: str) -> None:
    model = _model(name, 100)
    model.load_state_dict(_golden_state_dict(model.state_dict()), strict=True)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    expected = torch.tensor(_GOLDEN[name]["logits"])
    assert logits.shape == expected.shape
    rel_err = ((logits - expected).abs().max() / expected.abs().max()).item()
    assert rel_err <= GOLDEN_RTOL, f"{name}: max relative error {rel_err:.2e}"


@pytest.mark.parametrize("name", ZOO)
def test_forward_contract(name: str) -> None:
    model = _model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        intermediates = model.forward_intermediates(x)
    assert model.num_classes == 10
    assert isinstance(logits, Tensor)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert features.dim() == 4
    assert pooled.shape == (2, features.shape[1])
    torch.testing.assert_close(model.forward_head(features), logits)
    assert len(intermediates) > 0
    assert all(isinstance(f, Tensor) and f.shape[0] == 2 for f in intermediates)


@pytest.mark.parametrize("name", ZOO)
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    model = _model(name, 10).train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model(x).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "layer", "std"),
    [
        ("vgg8", "classifier", 0.01),  # VGG: Linear ~ N(0, 0.01)
        ("MobileNetV2", "classifier.0", 0.01),
    ],
)
def test_linear_init_matches_reference(name: str, layer: str, std: float) -> None:
    linear = _model(name, 10).get_submodule(layer)
    assert linear.weight.std().item() == pytest.approx(std, rel=0.2)
    assert torch.count_nonzero(linear.bias) == 0


@pytest.mark.parametrize(("name", "conv"), [("resnet8", "layer3.0.conv2"), ("wrn_16_2", "block3.layer.0.conv2")])
def test_conv_init_is_he_fan_out(name: str, conv: str) -> None:
    weight = _model(name, 10).get_submodule(conv).weight
    fan_out = weight.shape[0] * weight[0, 0].numel()
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)


def test_wrn_linear_bias_is_zero() -> None:
    assert torch.count_nonzero(_model("wrn_40_1", 10).fc.bias) == 0


def test_constructors_do_not_print(capsys: pytest.CaptureFixture[str]) -> None:
    get_model_factory("MobileNetV2")(num_classes=100)
    assert capsys.readouterr().out == ""


def test_mobilenetv1_imagenet() -> None:
    model = MobileNetV1()
    assert model.num_classes == 1000
    assert sum(p.numel() for p in model.parameters()) == 4_231_976
    model.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(x)
        intermediates = model.forward_intermediates(x)
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    assert [f.shape[1] for f in intermediates] == [128, 256, 512, 1024]
    assert get_model_factory("MobileNetV1") is MobileNetV1
