"""The ViT-table models (``lightning_kd.models.vit``) against the reference definitions, plus the model contract.

Reference numbers come from the LSKD tiny-transformers definitions and configs (DeiT-Ti, T2T-ViT-7, PiT-Ti,
PVT-Tiny, the r-56_c100 ResNet-56), by parameter arithmetic over their layer shapes at 100 classes. Counts and the
224 px feature shapes are checked on the meta device (no memory, no compute); the numeric tests build the models
for 64 px inputs to stay fast on a CPU.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lightning_kd.models.vit as vit
from lightning_kd.models import create_model, list_models, register_model

pytest.importorskip("timm")

# The reference's trainable parameter counts at 100 classes (T2T-ViT's counts what its complexity() reports: the
# parameters that require gradients). The distilled PiT has no reference; its count is timm's PiT-Ti with a token.
REFERENCE_PARAMETERS = {
    "deit_tiny": 5_543_716,
    "deit_tiny_distilled": 5_563_400,
    "t2t_vit_7": 4_024_394,
    "pit_tiny": 4_615_972,
    "pit_tiny_distilled": 4_641_736,
    "pvt_tiny": 12_767_588,
    "resnet56_pycls": 861_620,
}
# Published ImageNet-1k sizes in millions (T2T-ViT and PVT papers): a check independent of the arithmetic. (The PiT
# paper's 4.9M for PiT-Ti is 4,847,272 rounded up, so it cannot tell a wrong count to 0.1M; it is left out.)
PUBLISHED_IMAGENET_MILLIONS = {"t2t_vit_7": 4.3, "pvt_tiny": 13.2}
# The blocks (stages, for the teacher) the reference's locality guidance matches: INTER_STUDENT_INDEX /
# INTER_TEACHER_INDEX of its configs, and the feature shapes they have at its input sizes (224 px; 32 px teacher).
REFERENCE_FEATURES = {
    "deit_tiny": ((0, 6, 11), [(192, 14, 14)] * 3),
    "deit_tiny_distilled": ((0, 6, 11), [(192, 14, 14)] * 3),
    "t2t_vit_7": ((0, 3, 6), [(256, 14, 14)] * 3),
    "pit_tiny": ((0, 6, 11), [(64, 27, 27), (128, 14, 14), (256, 7, 7)]),
    "pit_tiny_distilled": ((0, 6, 11), [(64, 27, 27), (128, 14, 14), (256, 7, 7)]),
    "pvt_tiny": ((0, 3, 7), [(64, 56, 56), (128, 28, 28), (512, 7, 7)]),
    "resnet56_pycls": ((0, 1, 2), [(16, 32, 32), (32, 16, 16), (64, 8, 8)]),
}
NAMES = sorted(REFERENCE_PARAMETERS)
VITS = [name for name in NAMES if name != "resnet56_pycls"]
DISTILLED = ["deit_tiny_distilled", "pit_tiny_distilled"]
SMALL = 64  # input side of the numeric tests


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # batch-2 forwards gain nothing from intra-op threads on a shared CPU; restore the setting afterwards
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    _small_model.cache_clear()


def _meta_model(name: str, num_classes: int = 100) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes)


@functools.cache
def _small_model(name: str, drop_path_rate: float = 0.1) -> nn.Module:
    """A real model for ``SMALL`` px inputs, its heads drawn at random (the reference starts DeiT's at zero)."""
    torch.manual_seed(0)
    if name == "resnet56_pycls":
        return vit.resnet56_pycls(100)
    model = getattr(vit, name)(100, drop_path_rate=drop_path_rate, img_size=SMALL)
    with torch.no_grad():
        for head in (model.head, getattr(model, "head_dist", None)):
            if head is not None:
                head.weight.normal_(std=0.02)
    return model


def _inputs(name: str, seed: int = 1) -> Tensor:
    side = 32 if name == "resnet56_pycls" else SMALL
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(seed))


# --- reference facts (meta device) ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_the_reference(name: str) -> None:
    model = _meta_model(name)
    assert model.num_classes == 100
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETERS[name]


@pytest.mark.parametrize(("name", "millions"), sorted(PUBLISHED_IMAGENET_MILLIONS.items()))
def test_imagenet_sized_models_match_the_published_sizes(name: str, millions: float) -> None:
    model = _meta_model(name, num_classes=1000)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_t2t_keeps_the_reference_frozen_tensors_as_buffers() -> None:
    model = _meta_model("t2t_vit_7")
    # the reference's frozen parameters: two 32 x 64 Performer random-feature matrices, a 197 x 256 sinusoid table
    assert sum(b.numel() for b in model.buffers()) == 2 * 32 * 64 + 197 * 256
    # saved with the weights: the random features (drawn once); not saved: the table (rebuilt for the input size)
    saved = set(model.state_dict()) - set(dict(model.named_parameters()))
    assert sorted(saved) == [f"tokens_to_token.attention.{i}.attn.random_features" for i in range(2)]


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_gives_the_reference_features_at_the_reference_size(name: str) -> None:
    indices, shapes = REFERENCE_FEATURES[name]
    model = _meta_model(name).eval()
    assert model.reference_indices == indices
    side = 32 if name == "resnet56_pycls" else 224
    with torch.device("meta"):
        logits, features = model.forward_intermediates(torch.empty(2, 3, side, side))
    assert logits.shape == (2, 100)
    assert [tuple(f.shape) for f in features] == [(2, *shape) for shape in shapes]


@pytest.mark.parametrize("name", ["deit_tiny", "t2t_vit_7", "pit_tiny", "pvt_tiny"])
def test_models_without_a_distillation_token_refuse_forward_heads(name: str) -> None:
    model = _meta_model(name)
    with pytest.raises(RuntimeError, match="no distillation token"):
        model.forward_heads(torch.empty(2, 3, 224, 224, device="meta"))


@pytest.mark.parametrize("indices", [[12], [-13], [], [1.0]])
def test_forward_intermediates_rejects_bad_indices(indices: list) -> None:
    model = _meta_model("deit_tiny")
    with pytest.raises(ValueError, match=r"out of range|at least one"):
        model.forward_intermediates(torch.empty(2, 3, 224, 224, device="meta"), indices=indices)


# --- registration -----------------------------------------------------------------------------------------------


def test_models_are_built_by_name_but_not_listed() -> None:
    assert set(vit.__all__) == set(NAMES)
    assert not set(NAMES) & set(list_models())
    assert create_model("resnet56_pycls", num_classes=10).head.fc.out_features == 10
    assert _meta_model("pit_tiny", num_classes=10).head.out_features == 10


def test_their_names_cannot_be_registered_again() -> None:
    def pvt_tiny(num_classes: int = 100) -> nn.Module:
        return nn.Linear(1, num_classes)

    with pytest.raises(ValueError, match="'pvt_tiny' is already defined"):
        register_model(pvt_tiny)


def test_importing_the_model_zoo_does_not_import_timm() -> None:
    code = "import sys, lightning_kd.models; assert 'timm' not in sys.modules, 'timm imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_t2t_random_features_travel_with_the_weights(tmp_path) -> None:
    trained = _small_model("t2t_vit_7")  # no size-bound tensor is saved: 64 px weights load into a 224 px model
    path = tmp_path / "t2t.pt"
    torch.save(trained.state_dict(), path)
    features = [layer.attn.random_features for layer in trained.tokens_to_token.attention]
    torch.manual_seed(1)
    redrawn = [layer.attn.random_features for layer in create_model("t2t_vit_7").tokens_to_token.attention]
    assert not any(torch.equal(a, b) for a, b in zip(features, redrawn, strict=True))
    torch.manual_seed(1)
    loaded = create_model("t2t_vit_7", weights=str(path))
    assert all(
        torch.equal(a, layer.attn.random_features)
        for a, layer in zip(features, loaded.tokens_to_token.attention, strict=True)
    )


# --- numbers (real models, 64 px) -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_forward_returns_the_logits_forward_intermediates_returns(name: str) -> None:
    model = _small_model(name).eval()
    x = _inputs(name)
    with torch.no_grad():
        logits = model(x)
        again, features = model.forward_intermediates(x, indices=[2, 0])
        _, forward_order = model.forward_intermediates(x, indices=[0, 2])
    assert logits.shape == (2, 100)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0  # not the zero heads the reference starts DeiT with
    torch.testing.assert_close(again, logits)
    # the features come in the order asked for
    assert torch.equal(features[0], forward_order[1])
    assert torch.equal(features[1], forward_order[0])


@pytest.mark.parametrize("name", DISTILLED)
def test_distilled_forward_is_the_class_head_in_training_and_the_mean_in_eval(name: str) -> None:
    model = _small_model(name, drop_path_rate=0.0)  # no stochastic depth: training-mode outputs are deterministic
    x = _inputs(name)
    with torch.no_grad():
        model.eval()
        class_logits, distill_logits = model.forward_heads(x)
        assert class_logits.shape == distill_logits.shape == (2, 100)
        assert not torch.allclose(class_logits, distill_logits)
        torch.testing.assert_close(model(x), (class_logits + distill_logits) / 2)
        torch.testing.assert_close(model.forward_intermediates(x)[0], (class_logits + distill_logits) / 2)
        model.train()
        torch.testing.assert_close(model(x), model.forward_heads(x)[0])


def test_deit_starts_with_zero_heads_as_the_reference() -> None:
    torch.manual_seed(0)
    model = vit.deit_tiny(100, distilled=True, img_size=SMALL)
    for head in (model.head, model.head_dist):
        assert not head.weight.any()
        assert not head.bias.any()
    assert model.cls_token.std() > 1e-3  # drawn from N(0, 0.02^2) as the reference, not timm's N(0, 1e-12)


def test_pit_drop_path_follows_the_reference_schedule() -> None:
    model = _meta_model("pit_tiny")
    blocks = [block for stage in model.transformers for block in stage.blocks]
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in blocks]
    assert rates == pytest.approx([0.1 * i / 12 for i in range(12)])


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_updates_every_parameter(name: str) -> None:
    model = copy.deepcopy(_small_model(name)).train()  # the cached model stays untrained for the other tests
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, targets = _inputs(name), torch.tensor([3, 7])
    if name in DISTILLED:
        loss = sum(F.cross_entropy(logits, targets) for logits in model.forward_heads(x))
    else:
        loss = F.cross_entropy(model(x), targets)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    unchanged = [k for k, p in params.items() if torch.equal(p.detach(), before[k])]
    assert unchanged == []
    # buffers are not trained: the T2T random features stay as drawn
    for key in (k for k in before if k.endswith("random_features")):
        assert torch.equal(model.state_dict()[key], before[key])


def test_resnet56_pycls_is_the_project_resnet56_in_pycls_layout() -> None:
    torch.manual_seed(0)
    ours = create_model("resnet56").eval()
    pycls = _small_model("resnet56_pycls").eval()
    rules = [
        (r"^conv1\.", "stem.conv."),
        (r"^bn1\.", "stem.bn."),
        (r"^layer(\d)\.(\d+)\.", lambda m: f"s{m[1]}.b{int(m[2]) + 1}."),
        (r"\.conv1\.", ".f.a."),
        (r"\.bn1\.", ".f.a_bn."),
        (r"\.conv2\.", ".f.b."),
        (r"\.bn2\.", ".f.b_bn."),
        (r"\.downsample\.0\.", ".proj."),
        (r"\.downsample\.1\.", ".bn."),
        (r"^fc\.", "head.fc."),
    ]
    renamed = {}
    for key, value in ours.state_dict().items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    pycls.load_state_dict(renamed, strict=True)  # same tensors under pycls names
    x = _inputs("resnet56_pycls")
    with torch.no_grad():
        torch.testing.assert_close(pycls(x), ours(x))
        # the three stage outputs are the project's layer1..3 feats (its list starts with the stem)
        for a, b in zip(pycls.forward_intermediates(x)[1], ours.forward_intermediates(x)[1:], strict=True):
            torch.testing.assert_close(a, b)
    keys = list(pycls.state_dict())
    # pycls registers the projection shortcut before the residual branch
    assert keys.index("s2.b1.proj.weight") < keys.index("s2.b1.f.a.weight")
    assert keys[-2:] == ["head.fc.weight", "head.fc.bias"]
