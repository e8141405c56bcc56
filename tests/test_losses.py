"""KD and logit-standardized KD against values computed independently from the reference formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_kd.losses import KD, DistillationLoss, kd_divergence, standardize_logits


# --- an independent float64 NumPy implementation of docs/sources.md §1 -------------------------------------------
def _np_zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, ddof=1, keepdims=True) + 1e-7)


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_kd_loss(s, t, y, tau, ce_w, kd_w, standardize):
    ce = -_np_log_softmax(s)[np.arange(len(y)), y].mean()
    if standardize:
        s, t = _np_zscore(s), _np_zscore(t)
    log_q, log_p = _np_log_softmax(s / tau), _np_log_softmax(t / tau)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    return ce_w * ce, kd_w * tau**2 * kl


def _random_case(batch: int, classes: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale + 1.0
    y = torch.randint(0, classes, (batch,), generator=g)
    return s, t, y


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize(("batch", "classes"), [(1, 10), (7, 2), (16, 100), (64, 1000)])
def test_kd_matches_reference_formula(standardize, temperature, batch, classes):
    s, t, y = _random_case(batch, classes, seed=batch * 1000 + classes)
    ce_w, kd_w = 0.3, 2.5
    expected_ce, expected_kd = _np_kd_loss(s.numpy(), t.numpy(), y.numpy(), temperature, ce_w, kd_w, standardize)
    terms = KD(temperature=temperature, ce_weight=ce_w, kd_weight=kd_w, standardize=standardize)(
        s.float(), t.float(), y
    )
    assert set(terms) == {"ce", "kd"}
    assert terms["ce"].dtype == terms["kd"].dtype == torch.float32
    assert terms["ce"].item() == pytest.approx(expected_ce, rel=1e-5, abs=1e-6)
    assert terms["kd"].item() == pytest.approx(expected_kd, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("tau", "plain_g", "plain_w", "z_w"),
    [(2.0, 0.1515, 0.1428, 0.1516), (4.0, 0.1602, 0.1334, 0.1434), (1.0, 0.1234, 0.1481, 0.1556)],
)
def test_paper_toy_case(tau, plain_g, plain_w, z_w):
    """docs/sources.md §6: plain KD prefers a wrong-argmax student W to a scaled copy G at tau 2 and 4; LS does not."""
    t = torch.tensor([[3.0, 2.0, 1.0]])
    good, wrong = 0.3 * t, torch.tensor([[2.4, 2.6, 1.0]])
    assert kd_divergence(good, t, tau).item() == pytest.approx(plain_g, abs=1e-4)
    assert kd_divergence(wrong, t, tau).item() == pytest.approx(plain_w, abs=1e-4)
    z = standardize_logits
    assert kd_divergence(z(good), z(t), tau).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_divergence(z(wrong), z(t), tau).item() == pytest.approx(z_w, abs=1e-4)


def test_standardize_uses_unbiased_std_and_eps():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    unbiased = float(np.std([1, 2, 3, 4], ddof=1))
    expected = (np.array([1, 2, 3, 4]) - 2.5) / (unbiased + 1e-7)
    assert torch.allclose(standardize_logits(x), torch.from_numpy(expected[None]).float(), atol=1e-6)
    assert standardize_logits(x).std(dim=-1).item() == pytest.approx(1.0, abs=1e-5)


def test_standardize_constant_row_gives_zeros():
    out = standardize_logits(torch.full((2, 100), 3.5))
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(out))
    terms = KD(standardize=True)(torch.full((2, 10), 1.0), torch.randn(2, 10), torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in terms.values())


def test_standardized_kd_is_invariant_to_per_row_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 100, generator=g) * 3
    a = torch.rand(8, 1, generator=g) * 5 + 0.1  # per-row positive scale
    b = torch.randn(8, 1, generator=g) * 10  # per-row shift
    s = a * t + b
    y = torch.zeros(8, dtype=torch.long)
    ls = KD(temperature=2.0, ce_weight=0.0, kd_weight=1.0, standardize=True)
    plain = KD(temperature=2.0, ce_weight=0.0, kd_weight=1.0, standardize=False)
    assert ls(s, t, y)["kd"].item() == pytest.approx(0.0, abs=1e-5)
    # plain KD is shift-invariant only: the scaled copy is penalised
    assert plain(t + b, t, y)["kd"].item() == pytest.approx(0.0, abs=1e-5)
    assert plain(s, t, y)["kd"].item() > 0.1
    # a negative scale reverses the ranking: LS must penalise it
    assert ls(-t, t, y)["kd"].item() > 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("standardize", [False, True])
def test_low_precision_logits_give_the_fp32_loss(dtype, standardize):
    s, t, y = _random_case(32, 100, seed=3)
    loss = KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=standardize)
    ref = loss(s.to(dtype).float(), t.to(dtype).float(), y)  # same rounded inputs, fp32 math
    low = loss(s.to(dtype), t.to(dtype), y)
    for name in ("ce", "kd"):
        assert low[name].dtype == torch.float32
        assert torch.isfinite(low[name])
        assert low[name].item() == pytest.approx(ref[name].item(), rel=1e-5)


def test_gradients_reach_the_student_only_through_both_terms():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10)
    terms = KD(standardize=True)(s, t, torch.tensor([1, 2, 3, 4]))
    sum(terms.values()).backward()
    assert s.grad is not None
    assert torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0


def test_weights_combine_linearly():
    s, t, y = _random_case(8, 10, seed=5)
    s, t = s.float(), t.float()
    base = KD(temperature=3.0, ce_weight=1.0, kd_weight=1.0)(s, t, y)
    scaled = KD(temperature=3.0, ce_weight=0.25, kd_weight=4.0)(s, t, y)
    assert scaled["ce"].item() == pytest.approx(0.25 * base["ce"].item(), rel=1e-6)
    assert scaled["kd"].item() == pytest.approx(4.0 * base["kd"].item(), rel=1e-6)


def test_kd_temperature_one_equals_plain_kl():
    s, t, _ = _random_case(5, 7, seed=9)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True, reduction="batchmean"
    )
    assert kd_divergence(s, t, 1.0).item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got"):
        KD(temperature=temperature)


@pytest.mark.parametrize("field", ["ce_weight", "kd_weight"])
def test_negative_weight_is_rejected(field):
    with pytest.raises(ValueError, match=rf"{field} must be >= 0, got -0.5"):
        KD(**{field: -0.5})


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"Student logits \(4, 10\) and teacher logits \(4, 100\) must have the same"):
        KD()(torch.randn(4, 10), torch.randn(4, 100), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("bad", [10, -1])
def test_targets_out_of_range_are_rejected(bad):
    targets = torch.tensor([0, 1, bad, 2])
    with pytest.raises(ValueError, match=rf"Targets out of range: found \[{bad}\] but the logits have 10 classes"):
        KD()(torch.randn(4, 10), torch.randn(4, 10), targets)


def test_float_targets_are_rejected():
    with pytest.raises(ValueError, match="Targets must be integer class indices"):
        KD()(torch.randn(4, 10), torch.randn(4, 10), torch.zeros(4))


def test_hparams_are_primitives():
    loss = KD(temperature=2.0, kd_weight=9.0, standardize=True)
    assert isinstance(loss, DistillationLoss)
    assert loss.hparams_dict() == {
        "class_path": "lightning_kd.losses.kd.KD",
        "temperature": 2.0,
        "ce_weight": 0.1,
        "kd_weight": 9.0,
        "standardize": True,
    }
