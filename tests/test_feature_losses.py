"""Feature distillation (locality guidance, FitNet, AT) against independent float64 NumPy implementations."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import lightning_kd.losses.features as features_module
from lightning_kd.losses import (
    AT,
    FeatureLoss,
    FitNet,
    LocalityGuidance,
    attention_map,
    attention_transfer,
    hint_mse,
    locality_guidance,
    pool_to_smaller,
    resize_to_larger,
    similarity_map,
)


# --- the reference formulas in float64 NumPy, written without torch --------------------------------------------------
def _np_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D linear interpolation on half-pixel centres (``align_corners=False``)."""
    weights = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        weights[o, lo] += 1.0 - (src - lo)
        weights[o, hi] += src - lo
    return weights


def _np_resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    rows, cols = _np_bilinear_matrix(x.shape[2], h), _np_bilinear_matrix(x.shape[3], w)
    return np.einsum("ph,bchw,qw->bcpq", rows, x, cols)


def _np_adaptive_pool(x: np.ndarray, h: int, w: int) -> np.ndarray:
    in_h, in_w = x.shape[2:]
    out = np.empty((*x.shape[:2], h, w))
    for i in range(h):
        r0, r1 = (i * in_h) // h, -(-((i + 1) * in_h) // h)
        for j in range(w):
            c0, c1 = (j * in_w) // w, -(-((j + 1) * in_w) // w)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def _np_unit_rows(m: np.ndarray) -> np.ndarray:
    norms = np.sqrt((m * m).sum(axis=1, keepdims=True))
    return m / np.maximum(norms, 1e-12)


def _np_attention(x: np.ndarray, p: float) -> np.ndarray:
    # the paper's channel *sum*; the library takes the mean, which the normalization makes equal
    return _np_unit_rows((np.abs(x) ** p).sum(axis=1).reshape(x.shape[0], -1))


def _np_similarity(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    return _np_unit_rows(flat @ flat.T)


def _np_conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.einsum("oc,bchw->bohw", weight, x) + bias[None, :, None, None]


def _np_to_larger(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = max(s.shape[2], t.shape[2]), max(s.shape[3], t.shape[3])
    return _np_resize(s, h, w), _np_resize(t, h, w)


def _np_mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum() / a.size)


def _np_guidance(s, t, transform, regressor=None) -> float:
    if regressor is not None:
        s = _np_conv1x1(s, *regressor)
    s, t = _np_to_larger(s, t)
    if transform == "attention":
        s, t = _np_attention(s, 2.0), _np_attention(t, 2.0)
    elif transform == "similarity":
        s, t = _np_similarity(s), _np_similarity(t)
    return _np_mse(s, t)


def _np_at(s, t, p) -> float:
    h, w = min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3])
    s, t = _np_adaptive_pool(s, h, w), _np_adaptive_pool(t, h, w)
    return _np_mse(_np_attention(s, p), _np_attention(t, p))


# --- cases ------------------------------------------------------------------------------------------------------------
def _maps(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes]


# A ViT-like student (constant width, one 4x4 token grid) and a CNN teacher with three stages, as the paper's
# DeiT/ResNet-56 pairing, shrunk.
STUDENT_SHAPES = [(3, 6, 4, 4)] * 3
TEACHER_SHAPES = [(3, 2, 8, 8), (3, 3, 4, 4), (3, 5, 2, 2)]


def _vit_cnn_case(seed: int = 0):
    student = _maps(seed, *STUDENT_SHAPES)
    teacher = _maps(seed + 1, *TEACHER_SHAPES)
    return student, teacher


def _set_regressors(loss: FeatureLoss, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Give each regressor known float32-representable weights; return them as float64 arrays."""
    g = torch.Generator().manual_seed(seed)
    known = []
    with torch.no_grad():
        for conv in loss.regressors:
            weight = torch.randn(conv.weight.shape, generator=g).mul_(0.5)
            bias = torch.randn(conv.bias.shape, generator=g).mul_(0.1)
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
            known.append((weight[:, :, 0, 0].double().numpy(), bias.double().numpy()))
    return known


def _f32(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [m.float() for m in maps]


def _np(maps: list[torch.Tensor]) -> list[np.ndarray]:
    return [m.float().double().numpy() for m in maps]  # the float32-rounded values the library sees


# --- functions ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((2, 3, 4, 4), (2, 5, 8, 8)), ((2, 3, 3, 5), (2, 4, 6, 2)), ((1, 2, 7, 7), (1, 2, 2, 3))],
)
def test_resize_to_larger_matches_bilinear_half_pixel(shape_a, shape_b):
    a, b = _maps(1, shape_a, shape_b)
    out_a, out_b = resize_to_larger(a, b)
    size = (max(shape_a[2], shape_b[2]), max(shape_a[3], shape_b[3]))
    assert out_a.shape[2:] == out_b.shape[2:] == size
    np.testing.assert_allclose(out_a.numpy(), _np_resize(a.numpy(), *size), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_b.numpy(), _np_resize(b.numpy(), *size), rtol=1e-12, atol=1e-12)


def test_resize_and_pool_leave_a_map_of_the_target_size_untouched():
    a, b = _maps(2, (2, 3, 8, 8), (2, 1, 4, 4))
    assert resize_to_larger(a, b)[0] is a
    assert pool_to_smaller(a, b)[1] is b


@pytest.mark.parametrize(("shape_a", "shape_b"), [((2, 3, 8, 8), (2, 5, 4, 4)), ((2, 3, 6, 5), (2, 4, 4, 7))])
def test_pool_to_smaller_matches_adaptive_average(shape_a, shape_b):
    a, b = _maps(3, shape_a, shape_b)
    out_a, out_b = pool_to_smaller(a, b)
    size = (min(shape_a[2], shape_b[2]), min(shape_a[3], shape_b[3]))
    np.testing.assert_allclose(out_a.numpy(), _np_adaptive_pool(a.numpy(), *size), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_b.numpy(), _np_adaptive_pool(b.numpy(), *size), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.0])
def test_attention_map_matches_reference(p):
    (x,) = _maps(4, (3, 5, 4, 6))
    q = attention_map(x, p)
    assert q.shape == (3, 24)
    np.testing.assert_allclose(q.numpy(), _np_attention(x.numpy(), p), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.norm(dim=1).numpy(), 1.0, rtol=1e-12)


def test_attention_map_of_zeros_is_zeros_not_nan():
    q = attention_map(torch.zeros(2, 3, 4, 4))
    assert torch.equal(q, torch.zeros(2, 16))


def test_attention_transfer_hand_value():
    """One hot spot against a uniform 2x2 map: Q_s = (1, 0, 0, 0), Q_t = (1/2, ...): sum of squares 1, mean 1/4."""
    s = torch.zeros(1, 3, 2, 2)
    s[0, :, 0, 0] = 2.0
    t = torch.ones(1, 7, 2, 2)
    assert attention_transfer(s, t).item() == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
@pytest.mark.parametrize(("shape_s", "shape_t"), [((4, 6, 4, 4), (4, 3, 4, 4)), ((4, 6, 8, 8), (4, 3, 4, 4))])
def test_attention_transfer_matches_reference(p, shape_s, shape_t):
    s, t = _maps(5, shape_s, shape_t)
    value = attention_transfer(s, t, p)
    assert value.ndim == 0
    assert value.item() == pytest.approx(_np_at(s.numpy(), t.numpy(), p), rel=1e-10)


def test_similarity_map_matches_reference():
    (x,) = _maps(6, (5, 3, 2, 4))
    g = similarity_map(x)
    assert g.shape == (5, 5)
    np.testing.assert_allclose(g.numpy(), _np_similarity(x.numpy()), rtol=1e-10, atol=1e-12)


def test_hint_mse_matches_reference_and_refuses_broadcasting():
    s, t = _maps(7, (2, 3, 4, 4), (2, 3, 4, 4))
    assert hint_mse(s, t).item() == pytest.approx(_np_mse(s.numpy(), t.numpy()), rel=1e-12)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3, 4, 4\).*\(2, 1, 4, 4\)"):
        hint_mse(s, t[:, :1])


@pytest.mark.parametrize("transform", ["linear", "attention", "similarity"])
def test_locality_guidance_function_matches_reference(transform):
    channels = 3 if transform == "linear" else 5  # "linear" compares regressed features, so channels agree
    s, t = _maps(8, (3, channels, 4, 4), (3, 3, 8, 8))
    expected = _np_guidance(s.numpy(), t.numpy(), transform)
    assert locality_guidance(s, t, transform).item() == pytest.approx(expected, rel=1e-10)


def test_locality_guidance_function_rejects_an_unknown_transform():
    s, t = _maps(9, (2, 3, 4, 4), (2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"Unknown locality-guidance transform 'gram'.*'similarity'"):
        locality_guidance(s, t, "gram")


# --- strategies ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", ["linear", "attention", "similarity"])
def test_locality_guidance_matches_reference(transform):
    student, teacher = _vit_cnn_case()
    loss = LocalityGuidance(6, (2, 3, 5), student_layers=(0, 6, 11), teacher_layers=(1, 2, 3), transform=transform)
    regressors = _set_regressors(loss, seed=10) if transform == "linear" else [None] * 3
    terms = loss(_f32(student), _f32(teacher))
    expected = 2.5 * sum(
        _np_guidance(s, t, transform, r) for s, t, r in zip(_np(student), _np(teacher), regressors, strict=True)
    )
    assert set(terms) == {"guidance"}
    assert terms["guidance"].dtype == torch.float32
    assert terms["guidance"].ndim == 0
    assert terms["guidance"].item() == pytest.approx(expected, rel=1e-5)


def test_fitnet_matches_reference():
    student = _maps(11, (3, 4, 8, 8), (3, 6, 4, 4))
    teacher = _maps(12, (3, 8, 8, 8), (3, 5, 8, 8))  # the second pair differs in grid: both resized to 8x8
    loss = FitNet((4, 6), (8, 5), student_layers=(1, 2), teacher_layers=(1, 2), weight=100.0)
    regressors = _set_regressors(loss, seed=13)
    terms = loss(_f32(student), _f32(teacher))
    expected = 100.0 * sum(
        _np_mse(*_np_to_larger(_np_conv1x1(s, *r), t))
        for s, t, r in zip(_np(student), _np(teacher), regressors, strict=True)
    )
    assert set(terms) == {"hint"}
    assert terms["hint"].dtype == torch.float32
    assert terms["hint"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("p", [2, 3.0])
def test_at_matches_reference(p):
    student = _maps(14, (3, 4, 8, 8), (3, 8, 4, 4), (3, 16, 2, 2))
    teacher = _maps(15, (3, 16, 8, 8), (3, 32, 4, 4), (3, 64, 4, 4))  # the last pair: the teacher pooled to 2x2
    loss = AT(p=p)
    terms = loss(_f32(student), _f32(teacher))
    expected = 1000.0 * sum(_np_at(s, t, float(p)) for s, t in zip(_np(student), _np(teacher), strict=True))
    assert set(terms) == {"at"}
    assert terms["at"].dtype == torch.float32
    assert terms["at"].item() == pytest.approx(expected, rel=1e-5)


def test_defaults_are_the_reference_settings():
    lg = LocalityGuidance(192, (16, 32, 64))
    assert (lg.student_layers, lg.teacher_layers, lg.transform, lg.weight) == ((0, 6, 11), (1, 2, 3), "linear", 2.5)
    fitnet = FitNet(64, 64)
    assert (fitnet.student_layers, fitnet.teacher_layers, fitnet.weight) == ((2,), (2,), 100.0)
    at = AT()
    assert (at.student_layers, at.teacher_layers, at.p, at.weight) == ((1, 2, 3), (1, 2, 3), 2.0, 1000.0)


def _losses_with_cases():
    student, teacher = _vit_cnn_case(20)
    cnn_student = _maps(21, (3, 4, 8, 8), (3, 6, 4, 4), (3, 8, 2, 2))
    with torch.random.fork_rng():
        torch.manual_seed(22)  # the regressors' default initialization: the same losses on every run
        return [
            (LocalityGuidance(6, (2, 3, 5)), student, teacher),
            (LocalityGuidance(transform="attention"), student, teacher),
            (LocalityGuidance(transform="similarity"), student, teacher),
            (FitNet(6, (2, 3, 5), student_layers=(0, 1, 2), teacher_layers=(0, 1, 2)), student, teacher),
            (AT(), cnn_student, teacher),
        ]


@pytest.mark.parametrize("index", range(5))
def test_gradients_reach_student_and_adapters_but_not_teacher(index):
    loss, student, teacher = _losses_with_cases()[index]
    student = [s.float().requires_grad_() for s in student]
    teacher = [t.float().requires_grad_() for t in teacher]  # even a teacher map that tracks gradients gets none
    sum(loss(student, teacher).values()).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())


@pytest.mark.parametrize("index", range(5))
def test_fp32_terms_from_half_inputs_and_under_autocast(index):
    loss, student, teacher = _losses_with_cases()[index]
    reference = loss(_f32(student), _f32(teacher))
    # bf16 inputs: fp32 math on the bf16-rounded values
    rounded = loss([s.bfloat16() for s in student], [t.bfloat16() for t in teacher])
    expected = loss([s.bfloat16().float() for s in student], [t.bfloat16().float() for t in teacher])
    for name, value in rounded.items():
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(expected[name].item(), rel=1e-6)
    # autocast is switched off inside: the convolutions and Gram products stay in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss(_f32(student), _f32(teacher))
    for name, value in autocast.items():
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference[name].item(), rel=1e-6)


def test_a_loss_cast_to_bf16_still_computes_in_fp32():
    loss, student, teacher = _losses_with_cases()[0]
    expected = loss(_f32(student), _f32(teacher))["guidance"]
    loss = loss.to(torch.bfloat16)
    rounded = LocalityGuidance(6, (2, 3, 5))
    rounded.load_state_dict({k: v.float() for k, v in loss.state_dict().items()})
    value = loss([s.bfloat16() for s in student], [t.bfloat16() for t in teacher])["guidance"]
    assert value.dtype == torch.float32
    exact = rounded([s.bfloat16().float() for s in student], [t.bfloat16().float() for t in teacher])["guidance"]
    assert value.item() == pytest.approx(exact.item(), rel=1e-6)
    assert expected.item() == pytest.approx(value.item(), rel=0.05)


def test_adapters_are_parameters_and_state():
    lg = LocalityGuidance(192, (16, 32, 64))
    assert [tuple(p.shape) for p in lg.parameters()] == [
        (16, 192, 1, 1),
        (16,),
        (32, 192, 1, 1),
        (32,),
        (64, 192, 1, 1),
        (64,),
    ]
    assert sorted(lg.state_dict()) == [f"regressors.{i}.{n}" for i in range(3) for n in ("bias", "weight")]
    fitnet = FitNet(64, 256)
    assert sorted(fitnet.state_dict()) == ["regressors.0.bias", "regressors.0.weight"]
    for stateless in (LocalityGuidance(transform="attention"), LocalityGuidance(transform="similarity"), AT()):
        assert list(stateless.parameters()) == []
        assert stateless.state_dict() == {}


@pytest.mark.parametrize(
    "loss",
    [
        LocalityGuidance(192, (16, 32, 64)),
        LocalityGuidance(transform="similarity", student_layers=("blocks.0", "blocks.6"), teacher_layers=(1, 2)),
        FitNet(64, 128, student_layers=3, teacher_layers="layer3", weight=50.0),
        AT(p=3, weight=500.0),
    ],
)
def test_record_holds_primitives_and_rebuilds_the_loss(loss):
    record = loss.hparams_dict()
    assert record["class_path"] == f"lightning_kd.losses.features.{type(loss).__name__}"
    assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in record.values())
    rebuilt = type(loss)(**{k: v for k, v in record.items() if k != "class_path"})
    assert rebuilt.hparams_dict() == record
    assert "weight=" in repr(loss)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: LocalityGuidance(transform="cosine"), r"Unknown locality-guidance transform 'cosine'.*'attention'"),
        (lambda: LocalityGuidance(6, 2, student_layers=(0, 6), teacher_layers=(1, 2, 3)), r"same length"),
        (lambda: LocalityGuidance(), r"student_channels is required.*one per layer"),
        (lambda: LocalityGuidance(6, (2, 3)), r"teacher_channels must be .*3 positive integers.*\(2, 3\)"),
        (lambda: FitNet(0, 8), r"student_channels must be a positive integer"),
        (lambda: AT(student_layers=(0, 1.5), teacher_layers=(0, 1)), r"student_layers must be .*\(0, 1\.5\)"),
        (lambda: AT(student_layers=(), teacher_layers=()), r"non-empty"),
        (lambda: AT(student_layers=(True,), teacher_layers=(1,)), r"student_layers"),
        (lambda: AT(p=0.5), r"p must be a number >= 1, got 0\.5"),
        (lambda: FitNet(8, 8, weight=-1.0), r"weight must be >= 0, got -1\.0"),
    ],
)
def test_bad_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_features_are_named():
    student, teacher = _vit_cnn_case(30)
    student, teacher = _f32(student), _f32(teacher)
    loss = LocalityGuidance(6, (2, 3, 5))
    with pytest.raises(ValueError, match=r"one student feature per entry of student_layers=\[0, 6, 11\] \(3\), got 2"):
        loss(student[:2], teacher)
    with pytest.raises(ValueError, match=r"one teacher feature .* got a single tensor"):
        loss(student, teacher[0])
    tokens = student[0].flatten(2).transpose(1, 2)  # (B, N, C)
    with pytest.raises(ValueError, match=r"layer 0 has shape \(3, 16, 6\).*\(B, C, h, w\) grid"):
        loss([tokens, *student[1:]], teacher)
    with pytest.raises(ValueError, match=r"different batch sizes \[2, 3\]"):
        loss([student[0][:2], *student[1:]], teacher)
    with pytest.raises(ValueError, match=r"pair 1 .* built for 6 student and 3 teacher channels, got 6 and 4"):
        loss(student, [teacher[0], torch.randn(3, 4, 4, 4), teacher[2]])


def test_docstring_examples_run():
    assert doctest.testmod(features_module, raise_on_error=True).attempted >= 1
