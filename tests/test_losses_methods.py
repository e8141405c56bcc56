"""DKD, MLKD and CTKD against an independent float64 NumPy implementation of the reference formulas.

The NumPy functions below follow the reference code's arithmetic literally (docs/sources.md §2.2-2.4): DKD's summed
binary probabilities and its ``-1000`` target mask, MLKD's ``np.percentile`` masks reduced to scalars before
masking and its weak-view slip, CTKD's ``CosineDecay`` and sigmoid temperature. The library computes the same
quantities differently (log-space, exact class removal, ``torch.quantile``), so agreement is a real check.
"""

from __future__ import annotations

import csv
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from lightning_kd import DistillationModule
from lightning_kd.losses import (
    CTKD,
    DKD,
    KD,
    MLKD,
    DistillationLoss,
    confidence_masks,
    cosine_decay,
    curriculum_temperature,
    gradient_reversal,
    kd_divergence,
    non_target_indices,
    standardize_logits,
)
from tests.helpers.tiny import TinyNet, separable_loaders


# --- an independent float64 NumPy implementation of docs/sources.md §2 ---------------------------------------------
def _np_zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / (x.std(axis=-1, ddof=1, keepdims=True) + 1e-7)


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(_np_log_softmax(x))


def _np_ce(s: np.ndarray, y: np.ndarray) -> float:
    return float(-_np_log_softmax(s)[np.arange(len(y)), y].mean())


def _np_kl_sum(target: np.ndarray, log_input: np.ndarray) -> float:
    """torch's ``kl_div(log_input, target, reduction="sum")``: target * (log target - log_input), 0 at target 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(target > 0, target * (np.log(target) - log_input), 0.0).sum())


def _np_kd(s, t, tau, standardize, reduce=True):
    if standardize:
        s, t = _np_zscore(s), _np_zscore(t)
    p_t, log_q = _np_softmax(t / tau), _np_log_softmax(s / tau)
    per_sample = (p_t * (np.log(p_t) - log_q)).sum(axis=-1) * tau**2
    return per_sample.mean() if reduce else per_sample


def _np_dkd(s, t, y, *, alpha, beta, tau, warmup, epoch, ce_w, standardize):
    """The reference ``dkd_loss``: binary [p_gt, sum of others], log of the sums, and a -1000 target mask."""
    ce = ce_w * _np_ce(s, y)
    if standardize:
        s, t = _np_zscore(s), _np_zscore(t)
    batch = len(y)
    gt = np.zeros_like(s)
    gt[np.arange(batch), y] = 1.0
    p_s, p_t = _np_softmax(s / tau), _np_softmax(t / tau)
    b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], axis=1)
    b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], axis=1)
    tckd = _np_kl_sum(b_t, np.log(b_s)) * tau**2 / batch
    p_t2 = _np_softmax(t / tau - 1000.0 * gt)
    log_p_s2 = _np_log_softmax(s / tau - 1000.0 * gt)
    nckd = _np_kl_sum(p_t2, log_p_s2) * tau**2 / batch
    factor = min(epoch / warmup, 1.0)
    return ce, factor * alpha * tckd, factor * beta * nckd


def _np_cc(s, t, tau, reduce=True):
    p_s, p_t = _np_softmax(s / tau), _np_softmax(t / tau)
    squared = (p_t.T @ p_t - p_s.T @ p_s) ** 2 / s.shape[1]
    return squared.sum() if reduce else squared


def _np_bc(s, t, tau, reduce=True):
    p_s, p_t = _np_softmax(s / tau), _np_softmax(t / tau)
    squared = (p_t @ p_t.T - p_s @ p_s.T) ** 2 / s.shape[0]
    return squared.sum() if reduce else squared


def _np_mlkd(sw, ss, tw, ts, y, *, t0, ce_w, kd_w, standardize, scalar_masks=True, slip=True):
    """The reference MLKD forward; ``scalar_masks=False`` masks the unreduced terms (the documented fix)."""
    p_tw = _np_softmax(tw)
    confidence = p_tw.max(axis=1)
    mask = confidence <= np.percentile(confidence, 50)
    class_confidence = p_tw.sum(axis=0)
    class_mask = class_confidence <= np.percentile(class_confidence, 50)
    temps = [t0, 3.0, 5.0, 2.0, 6.0]

    ce = ce_w * (_np_ce(sw, y) + _np_ce(ss, y))
    if scalar_masks:  # the reference: `(scalar * bool_mask).mean()`
        kd_weak = sum(kd_w * (np.asarray(_np_kd(sw, tw, T, standardize)) * mask).mean() for T in temps)
        cc = sum(kd_w * (np.asarray(_np_cc(sw, tw, T)) * class_mask).mean() for T in temps)
        bc = sum(kd_w * (np.asarray(_np_bc(sw, tw, T)) * mask).mean() for T in temps)
    else:
        kd_weak = sum(kd_w * (_np_kd(sw, tw, T, standardize, reduce=False) * mask).mean() for T in temps)
        cc = sum(kd_w * (_np_cc(sw, tw, T, reduce=False) * class_mask[None, :]).sum() for T in temps)
        bc = sum(kd_w * (_np_bc(sw, tw, T, reduce=False) * mask[None, :]).sum() for T in temps)
    kd_strong = sum(kd_w * _np_kd(ss, ts, T, standardize) for T in temps[:3])
    late_s, late_t = (sw, tw) if slip else (ss, ts)
    kd_strong += sum(kd_w * _np_kd(late_s, late_t, T, standardize) for T in temps[3:])
    return {"ce": ce, "kd": kd_weak + kd_strong, "cc": cc, "bc": bc}


def _np_cosine_lambda(epoch, lam_max, lam_min, loops):
    """CTKD's ``CosineDecay.get_value``."""
    i = min(max(epoch, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (lam_max - lam_min) + lam_min


def _np_ctkd(s, t, y, theta, *, t_start, t_end, ce_w, kd_w, standardize):
    tau = t_start + t_end / (1.0 + math.exp(-theta))
    return ce_w * _np_ce(s, y), kd_w * _np_kd(s, t, tau, standardize)


# --- helpers -----------------------------------------------------------------------------------------------
def _random_case(batch: int, classes: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale + 1.0
    y = torch.randint(0, classes, (batch,), generator=g)
    return s, t, y


def _two_view_case(batch: int, classes: int, seed: int):
    s_weak, t_weak, y = _random_case(batch, classes, seed)
    s_strong, t_strong, _ = _random_case(batch, classes, seed + 1, scale=4.0)
    return (s_weak, s_strong), (t_weak, t_strong), y


def _approx(value: float, rel: float = 1e-4):
    return pytest.approx(value, rel=rel, abs=1e-6)


# --- DKD -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize(("batch", "classes"), [(5, 2), (16, 10), (32, 100)])
def test_dkd_matches_reference_formula(standardize, temperature, batch, classes):
    s, t, y = _random_case(batch, classes, seed=batch * 100 + classes)
    kwargs = {"alpha": 1.5, "beta": 6.0, "warmup": 20, "ce_weight": 0.7}
    terms = DKD(temperature=temperature, standardize=standardize, **kwargs)(s.float(), t.float(), y, epoch=30)
    ce, tckd, nckd = _np_dkd(
        s.numpy(), t.numpy(), y.numpy(), tau=temperature, epoch=30, ce_w=0.7, standardize=standardize,
        alpha=1.5, beta=6.0, warmup=20,
    )  # fmt: skip
    assert set(terms) == {"ce", "tckd", "nckd"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in terms.values())
    assert terms["ce"].item() == _approx(ce, rel=1e-5)
    assert terms["tckd"].item() == _approx(tckd)
    assert terms["nckd"].item() == _approx(nckd)
    if classes == 2:  # one non-target class: nothing to distribute
        assert terms["nckd"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("epoch", [1, 2, 10, 19, 20, 21, 240])
@pytest.mark.parametrize("standardize", [False, True])
def test_dkd_warmup_across_epochs(epoch, standardize):
    s, t, y = _random_case(16, 100, seed=11)
    loss = DKD(alpha=9.0, beta=72.0, temperature=2.0, warmup=20, standardize=standardize)
    terms = loss(s.float(), t.float(), y, epoch=epoch)
    ce, tckd, nckd = _np_dkd(
        s.numpy(), t.numpy(), y.numpy(), alpha=9.0, beta=72.0, tau=2.0, warmup=20, epoch=epoch, ce_w=1.0,
        standardize=standardize,
    )  # fmt: skip
    assert loss.warmup_factor(epoch) == min(epoch / 20, 1.0)
    assert terms["ce"].item() == _approx(ce, rel=1e-5)  # never warmed up
    assert terms["tckd"].item() == _approx(tckd)
    assert terms["nckd"].item() == _approx(nckd)


def test_dkd_stays_finite_where_the_reference_takes_log_of_zero():
    # an extreme target logit: the student's non-target mass underflows to 0 in fp32, so the reference's
    # log(sum of probabilities) is -inf and its TCKD inf; the float64 formula (no underflow) is finite
    s = torch.zeros(2, 10, dtype=torch.float64)
    s[:, 3] = 200.0
    t = torch.randn(2, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([3, 3])
    p_other = torch.softmax(s.float(), dim=-1)[:, [0, 1, 2, 4, 5, 6, 7, 8, 9]].sum(-1)
    assert torch.isinf(torch.log(p_other)).all()  # what an fp32 literal port computes
    terms = DKD(temperature=1.0)(s.float(), t.float(), y)
    _, tckd, nckd = _np_dkd(
        s.numpy(), t.numpy(), y.numpy(), alpha=1.0, beta=8.0, tau=1.0, warmup=20, epoch=1, ce_w=1.0, standardize=False
    )
    assert terms["tckd"].item() == _approx(tckd)
    assert terms["nckd"].item() == _approx(nckd)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_terms_recompose_kd(temperature):
    """DKD's decomposition (Zhao et al., eq. 5), per sample: KD = TCKD + (1 - p^t_target) * NCKD."""
    s, t, y = _random_case(6, 12, seed=21)
    p_target = torch.softmax(t / temperature, dim=-1).gather(-1, y[:, None]).squeeze(-1)
    loss = DKD(alpha=1.0, beta=1.0, temperature=temperature, warmup=1)
    for b in range(6):
        row = slice(b, b + 1)
        terms = loss(s[row], t[row], y[row])
        recomposed = terms["tckd"] + (1 - p_target[b]) * terms["nckd"]
        assert recomposed.item() == pytest.approx(kd_divergence(s[row], t[row], temperature).item(), rel=1e-5)


def test_non_target_indices_skip_exactly_the_target():
    y = torch.tensor([0, 3, 6, 2])
    idx = non_target_indices(y, 7)
    expected = torch.stack([torch.tensor([k for k in range(7) if k != int(c)]) for c in y])
    assert torch.equal(idx, expected)


# --- MLKD ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("temperature", [2.0, 4.0])
@pytest.mark.parametrize(("batch", "classes"), [(7, 5), (16, 10), (32, 100)])
def test_mlkd_matches_reference_formula(standardize, temperature, batch, classes):
    (sw, ss), (tw, ts), y = _two_view_case(batch, classes, seed=batch + classes)
    loss = MLKD(temperature=temperature, ce_weight=0.1, kd_weight=9.0, standardize=standardize)
    terms = loss((sw.float(), ss.float()), (tw.float(), ts.float()), y)
    expected = _np_mlkd(
        sw.numpy(), ss.numpy(), tw.numpy(), ts.numpy(), y.numpy(), t0=temperature, ce_w=0.1, kd_w=9.0,
        standardize=standardize,
    )  # fmt: skip
    assert set(terms) == {"ce", "kd", "cc", "bc"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in terms.values())
    for name, value in expected.items():
        assert terms[name].item() == _approx(value), name


@pytest.mark.parametrize(("scalar_masks", "slip"), [(True, False), (False, True), (False, False)])
def test_mlkd_quirk_switches_match_their_formulas(scalar_masks, slip):
    (sw, ss), (tw, ts), y = _two_view_case(12, 20, seed=4)
    loss = MLKD(temperature=2.0, kd_weight=6.0, standardize=True, scalar_masks=scalar_masks,
                weak_logits_in_strong_terms=slip)  # fmt: skip
    terms = loss((sw.float(), ss.float()), (tw.float(), ts.float()), y)
    expected = _np_mlkd(
        sw.numpy(), ss.numpy(), tw.numpy(), ts.numpy(), y.numpy(), t0=2.0, ce_w=0.1, kd_w=6.0, standardize=True,
        scalar_masks=scalar_masks, slip=slip,
    )  # fmt: skip
    for name, value in expected.items():
        assert terms[name].item() == _approx(value), name
    # each switch really changes the loss (both default True reproduce the reference)
    default = MLKD(temperature=2.0, kd_weight=6.0, standardize=True)(
        (sw.float(), ss.float()), (tw.float(), ts.float()), y
    )
    assert terms["kd"].item() != pytest.approx(default["kd"].item(), rel=1e-4)


def test_mlkd_correlation_terms_are_never_standardized():
    views_s, views_t, y = _two_view_case(16, 10, seed=8)
    views_s, views_t = tuple(v.float() for v in views_s), tuple(v.float() for v in views_t)
    plain = MLKD(temperature=2.0)(views_s, views_t, y)
    ls = MLKD(temperature=2.0, standardize=True)(views_s, views_t, y)
    for name in ("ce", "cc", "bc"):
        assert ls[name].item() == plain[name].item(), name
    assert ls["kd"].item() != pytest.approx(plain["kd"].item(), rel=1e-3)


@pytest.mark.parametrize("batch", [1, 2, 7, 16, 33])
def test_confidence_masks_use_the_linear_percentile(batch):
    _, t, _ = _random_case(batch, 10, seed=batch)
    t[: batch // 2] = t[batch - batch // 2 :]  # duplicated rows: ties at the median
    sample_mask, class_mask = confidence_masks(t.float())
    p = _np_softmax(t.numpy())
    assert sample_mask.tolist() == (p.max(1) <= np.percentile(p.max(1), 50)).tolist()
    assert class_mask.tolist() == (p.sum(0) <= np.percentile(p.sum(0), 50)).tolist()


def test_mlkd_single_view_asks_for_two_views():
    s, t, y = _random_case(4, 10, seed=0)
    with pytest.raises(ValueError, match=r"single tensor of shape \(4, 10\).*`two_views: true`.*two_views=True"):
        MLKD()(s.float(), t.float(), y)
    with pytest.raises(ValueError, match=r"exactly two views .* got 3 views"):
        MLKD()((s, s, s), (t, t, t), y)
    assert MLKD.num_views == 2


def test_mlkd_checks_each_view():
    s, t, y = _random_case(4, 10, seed=0)
    with pytest.raises(ValueError, match=r"Student logits \(4, 10\) and teacher logits \(4, 12\)"):
        MLKD()((s, s), (t, torch.randn(4, 12)), y)


# --- CTKD ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch", [1, 2, 5, 10, 11, 240])
@pytest.mark.parametrize(("lam_max", "lam_min", "loops"), [(0.0, -1.0, 10), (0.0, -1.0, 5), (0.5, -2.0, 3)])
def test_cosine_decay_is_ctkd_schedule(epoch, lam_max, lam_min, loops):
    expected = _np_cosine_lambda(epoch, lam_max, lam_min, loops)
    assert cosine_decay(epoch, lam_max, lam_min, loops) == pytest.approx(expected, abs=1e-12)
    loss = CTKD(lambda_max=lam_max, lambda_min=lam_min, decay_epochs=loops)
    assert loss.gradient_lambda(epoch) == pytest.approx(expected, abs=1e-12)


def test_ctkd_schedule_values_of_the_logs():
    loss = CTKD()
    assert loss.gradient_lambda(1) == pytest.approx(-0.0245, abs=5e-5)  # the logged `decay_value` at epoch 1
    assert loss.gradient_lambda(10) == loss.gradient_lambda(200) == -1.0
    assert loss.current_temperature().item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)  # ~15.62
    assert [name for name, _ in loss.named_parameters()] == ["theta"]
    assert loss.theta.shape == (1,)
    assert loss.theta.item() == 1.0


def _set_theta(loss: CTKD, value: float) -> None:
    with torch.no_grad():
        loss.theta.fill_(value)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("epoch", [1, 4, 30])
@pytest.mark.parametrize(("theta", "batch", "classes"), [(1.0, 16, 100), (-2.0, 8, 10), (3.0, 4, 7)])
def test_ctkd_value_and_reversed_gradient_match_reference(standardize, epoch, theta, batch, classes):
    s, t, y = _random_case(batch, classes, seed=epoch + batch)
    kwargs = {"t_start": 1.0, "t_end": 20.0, "ce_w": 0.1, "kd_w": 9.0, "standardize": standardize}
    loss = CTKD(t_start=1.0, t_end=20.0, ce_weight=0.1, kd_weight=9.0, standardize=standardize)
    _set_theta(loss, theta)
    student = s.float().requires_grad_(True)
    terms = loss(student, t.float(), y, epoch=epoch)
    ce, kd = _np_ctkd(s.numpy(), t.numpy(), y.numpy(), theta, **kwargs)
    assert set(terms) == {"ce", "kd"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in terms.values())
    assert terms["ce"].item() == _approx(ce, rel=1e-5)
    assert terms["kd"].item() == _approx(kd)

    sum(terms.values()).backward()
    # the gradient-reversal layer: theta's gradient is exactly lambda_e times the gradient at lambda = 1
    unreversed = CTKD(lambda_max=1.0, lambda_min=1.0, ce_weight=0.1, kd_weight=9.0, standardize=standardize)
    _set_theta(unreversed, theta)
    sum(unreversed(s.float(), t.float(), y, epoch=epoch).values()).backward()
    lam = _np_cosine_lambda(epoch, 0.0, -1.0, 10)
    assert loss.theta.grad.item() == pytest.approx(lam * unreversed.theta.grad.item(), rel=1e-6)
    # ... and that gradient is d(kd)/d(theta) of the float64 formula (central differences). T^2 * KL(T) is
    # nearly flat in T, so the fp32 gradient carries cancellation error (as the reference's): a loose bound
    h = 1e-5
    plus = _np_ctkd(s.numpy(), t.numpy(), y.numpy(), theta + h, **kwargs)[1]
    minus = _np_ctkd(s.numpy(), t.numpy(), y.numpy(), theta - h, **kwargs)[1]
    assert unreversed.theta.grad.item() == pytest.approx((plus - minus) / (2 * h), rel=0.25)
    assert student.grad is not None  # the student's gradient is not reversed: it descends as usual


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize(("theta", "lam"), [(1.0, -0.0245), (-2.0, -1.0), (3.0, 0.5)])
def test_curriculum_temperature_gradient_in_float64(standardize, theta, lam):
    """The functional path in float64 has no cancellation problem: tight agreement with central differences."""
    s, t, y = _random_case(16, 100, seed=7)
    theta_t = torch.tensor([theta], dtype=torch.float64, requires_grad=True)
    z = standardize_logits if standardize else (lambda x: x)
    temperature = curriculum_temperature(theta_t, lam, 1.0, 20.0).squeeze(0)
    kd_divergence(z(s), z(t), temperature).backward()
    kwargs = {"t_start": 1.0, "t_end": 20.0, "ce_w": 0.1, "kd_w": 1.0, "standardize": standardize}
    h = 1e-4  # central differences: O(h^2) truncation, far below the tolerance
    plus = _np_ctkd(s.numpy(), t.numpy(), y.numpy(), theta + h, **kwargs)[1]
    minus = _np_ctkd(s.numpy(), t.numpy(), y.numpy(), theta - h, **kwargs)[1]
    assert theta_t.grad.item() == pytest.approx(lam * (plus - minus) / (2 * h), rel=1e-5)


def test_ctkd_temperature_ascends_the_kd_loss():
    """One SGD step on theta alone raises the KD loss at lambda < 0 and lowers it at lambda > 0."""
    s, t, y = _random_case(16, 10, seed=2)
    s, t = s.float(), t.float()
    for lam_min, sign in ((-1.0, 1), (1.0, -1)):
        loss = CTKD(lambda_min=lam_min, decay_epochs=1)  # lambda = lambda_min from epoch 1
        _set_theta(loss, -1.0)  # mid-sigmoid: a sizeable gradient
        before = loss(s, t, y, epoch=3)["kd"]
        before.backward()
        torch.optim.SGD(loss.parameters(), lr=1.0).step()
        after = loss(s, t, y, epoch=3)["kd"]
        assert sign * (after.item() - before.item()) > 0


@pytest.mark.parametrize("standardize", [False, True])
def test_ctkd_is_kd_at_its_current_temperature(standardize):
    s, t, y = _random_case(8, 20, seed=13)
    s, t = s.float(), t.float()
    loss = CTKD(ce_weight=0.3, kd_weight=2.0, standardize=standardize)
    _set_theta(loss, math.log(0.15 / 0.85))  # sigmoid = 0.15: tau = 1 + 20 * 0.15 = 4
    assert loss.current_temperature().item() == pytest.approx(4.0, rel=1e-6)
    ctkd = loss(s, t, y, epoch=7)
    kd = KD(temperature=4.0, ce_weight=0.3, kd_weight=2.0, standardize=standardize)(s, t, y)
    for name in ("ce", "kd"):
        assert ctkd[name].item() == pytest.approx(kd[name].item(), rel=1e-5), name


def test_gradient_reversal_scales_the_gradient_only():
    x = torch.tensor([0.5, -2.0], requires_grad=True)
    y = gradient_reversal(x, -0.3)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.6, -1.5]))


def test_ctkd_current_temperature_follows_theta():
    loss = CTKD(t_start=2.0, t_end=28.4)
    _set_theta(loss, -3.0)
    assert loss.current_temperature().item() == pytest.approx(2.0 + 28.4 / (1 + math.exp(3.0)), rel=1e-6)
    assert not loss.current_temperature().requires_grad


# --- properties shared by the three ----------------------------------------------------------------------------
def _kl_terms(loss: DistillationLoss, s, t, y) -> dict[str, float]:
    terms = loss(s, t, y, epoch=25)
    names = {"DKD": ("tckd", "nckd"), "MLKD": ("kd",), "CTKD": ("kd",)}[type(loss).__name__]
    return {name: terms[name].item() for name in names}


def _losses(standardize: bool) -> list[DistillationLoss]:
    return [
        DKD(alpha=9.0, beta=72.0, temperature=2.0, standardize=standardize),
        MLKD(temperature=2.0, kd_weight=9.0, standardize=standardize),
        CTKD(kd_weight=9.0, standardize=standardize),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["DKD", "MLKD", "CTKD"])
def test_standardized_kl_terms_ignore_student_scale_and_shift(index):
    g = torch.Generator().manual_seed(index)
    s, t, y = (torch.randn(8, 50, generator=g) * 2, torch.randn(8, 50, generator=g) * 3, torch.arange(8) * 6)
    s2, t2 = torch.randn(8, 50, generator=g), torch.randn(8, 50, generator=g)
    a = torch.rand(8, 1, generator=g) * 5 + 0.2  # per-row positive scale
    b = torch.randn(8, 1, generator=g) * 10  # per-row shift
    two_views = index == 1
    pack = (lambda x, x2: (x, x2)) if two_views else (lambda x, x2: x)
    ls, plain = _losses(True)[index], _losses(False)[index]
    reference = _kl_terms(ls, pack(s, s2), pack(t, t2), y)
    moved = _kl_terms(ls, pack(a * s + b, a * s2 + b), pack(t, t2), y)
    for name, value in reference.items():
        assert moved[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # without LS the same transformation changes the KL terms (the check above is not vacuous)
    plain_ref = _kl_terms(plain, pack(s, s2), pack(t, t2), y)
    plain_moved = _kl_terms(plain, pack(a * s + b, a * s2 + b), pack(t, t2), y)
    assert any(plain_moved[k] != pytest.approx(v, rel=1e-2) for k, v in plain_ref.items())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["DKD", "MLKD", "CTKD"])
def test_low_precision_logits_give_the_fp32_loss(dtype, index):
    s, t, y = _random_case(16, 100, seed=3)
    s2, t2, _ = _random_case(16, 100, seed=4)
    two_views = index == 1

    def run(cast):
        views = ((cast(s), cast(s2)), (cast(t), cast(t2))) if two_views else (cast(s), cast(t))
        return _losses(True)[index](*views, y, epoch=5)

    low = run(lambda x: x.to(dtype))
    ref = run(lambda x: x.to(dtype).float())  # same rounded inputs, fp32 math
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert value.item() == pytest.approx(ref[name].item(), rel=1e-5), name


@pytest.mark.parametrize("index", [0, 1, 2], ids=["DKD", "MLKD", "CTKD"])
def test_gradients_reach_the_student_finitely(index):
    s = torch.randn(6, 10, requires_grad=True)
    s2 = torch.randn(6, 10, requires_grad=True)
    t, t2 = torch.randn(6, 10), torch.randn(6, 10)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    args = ((s, s2), (t, t2)) if index == 1 else (s, t)
    terms = _losses(True)[index](*args, y, epoch=3)
    sum(terms.values()).backward()
    for x in (s, s2) if index == 1 else (s,):
        assert torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: DKD(temperature=0.0), r"temperature must be > 0, got 0.0"),
        (lambda: DKD(beta=-1.0), r"beta must be >= 0, got -1.0"),
        (lambda: DKD(alpha=float("nan")), r"alpha must be >= 0, got nan"),
        (lambda: DKD(warmup=0), r"warmup must be an integer >= 1 .*got 0"),
        (lambda: DKD(warmup=2.5), r"warmup must be an integer >= 1 .*got 2.5"),
        (lambda: MLKD(temperature=-2.0), r"temperature must be > 0, got -2.0"),
        (lambda: MLKD(kd_weight=-9.0), r"kd_weight must be >= 0, got -9.0"),
        (lambda: CTKD(t_start=-1.0), r"t_start must be >= 0, got -1.0"),
        (lambda: CTKD(t_end=0.0), r"t_end must be > 0, got 0.0"),
        (lambda: CTKD(lambda_min=float("inf")), r"lambda_min must be a finite number, got inf"),
        (lambda: CTKD(decay_epochs=0), r"decay_epochs must be an integer >= 1 .*got 0"),
        (lambda: CTKD(ce_weight=-0.1), r"ce_weight must be >= 0, got -0.1"),
    ],
)
def test_bad_arguments_are_rejected(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("loss", [DKD(), CTKD()], ids=["DKD", "CTKD"])
def test_epoch_counts_from_one(loss):
    s, t, y = _random_case(4, 10, seed=0)
    with pytest.raises(ValueError, match=r"epoch must be >= 1 .*got 0"):
        loss(s.float(), t.float(), y, epoch=0)


def test_dkd_needs_two_classes():
    with pytest.raises(ValueError, match="DKD needs at least 2 classes"):
        DKD()(torch.randn(3, 1), torch.randn(3, 1), torch.zeros(3, dtype=torch.long))


def test_hparams_are_primitives():
    assert DKD(alpha=9.0, beta=72.0, temperature=2.0, standardize=True).hparams_dict() == {
        "class_path": "lightning_kd.losses.dkd.DKD",
        "alpha": 9.0, "beta": 72.0, "temperature": 2.0, "warmup": 20, "ce_weight": 1.0, "standardize": True,
    }  # fmt: skip
    assert MLKD(temperature=2.0, kd_weight=6.0).hparams_dict() == {
        "class_path": "lightning_kd.losses.mlkd.MLKD",
        "temperature": 2.0, "ce_weight": 0.1, "kd_weight": 6.0, "standardize": False, "scalar_masks": True,
        "weak_logits_in_strong_terms": True,
    }  # fmt: skip
    assert CTKD(kd_weight=9.0, standardize=True).hparams_dict() == {
        "class_path": "lightning_kd.losses.ctkd.CTKD",
        "t_start": 1.0, "t_end": 20.0, "lambda_max": 0.0, "lambda_min": -1.0, "decay_epochs": 10,
        "ce_weight": 0.1, "kd_weight": 9.0, "standardize": True,
    }  # fmt: skip


def test_standardize_changes_every_loss():
    """LS on and off give different numbers (peers.md B.2), and KD's kd_divergence is reused unchanged."""
    s, t, y = _random_case(8, 20, seed=6)
    s, t = s.float(), t.float()
    for on, off in zip(_losses(True), _losses(False), strict=True):
        args = ((s, s + 1), (t, t * 2)) if isinstance(on, MLKD) else (s, t)
        assert sum(on(*args, y, epoch=30).values()).item() != pytest.approx(
            sum(off(*args, y, epoch=30).values()).item(), rel=1e-3
        )
    assert kd_divergence(s, t, 2.0).item() == _approx(_np_kd(s.double().numpy(), t.double().numpy(), 2.0, False))


# --- under a real Lightning fit ---------------------------------------------------------------------------------
def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_epochs=kwargs.pop("max_epochs", 2),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


def test_ctkd_temperature_is_optimized_and_checkpointed(tmp_path):
    torch.manual_seed(0)
    loss = CTKD(decay_epochs=2, kd_weight=9.0, standardize=True)  # lambda -0.5 at epoch 1, -1 at epoch 2
    module = DistillationModule(
        student=TinyNet(), teacher=TinyNet(width=16), loss=loss,
        optimizer=partial(torch.optim.SGD, lr=0.5), lr_scheduler=None,  # no weight decay: only gradients move theta
    )  # fmt: skip
    theta_before = loss.theta.detach().clone()
    train, val = separable_loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, logger=False, callbacks=[checkpoint])
    trainer.fit(module, train, val)

    params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert any(p is loss.theta for p in params)
    assert not torch.equal(loss.theta.detach(), theta_before)

    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert torch.equal(state["state_dict"]["loss.theta"], loss.theta.detach())
    assert state["hyper_parameters"]["loss.class_path"] == "lightning_kd.losses.ctkd.CTKD"
    fresh = DistillationModule(student=TinyNet(), teacher=TinyNet(width=16), loss=CTKD(kd_weight=9.0, standardize=True))
    assert fresh.loss.theta.item() == 1.0
    fresh.load_state_dict(state["state_dict"])
    assert torch.equal(fresh.loss.theta.detach(), loss.theta.detach())
    assert fresh.loss.current_temperature().item() == pytest.approx(loss.current_temperature().item())


class _TwoViews(Dataset):
    """``((weak, strong), label)`` items: the strong view is the weak one with extra noise."""

    def __init__(self, n: int = 48, num_classes: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % num_classes
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.3
        self.x[:, 0] += self.y.view(-1, 1, 1).float()
        self.noise = torch.randn(n, 3, 8, 8, generator=g) * 0.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return (self.x[i], self.x[i] + self.noise[i]), self.y[i]


def test_mlkd_trains_on_two_view_batches(tmp_path):
    torch.manual_seed(0)
    module = DistillationModule(
        student=TinyNet(), teacher=TinyNet(width=16), loss=MLKD(temperature=2.0, kd_weight=9.0, standardize=True),
        lr_scheduler=None,
    )  # fmt: skip
    fc_before = module.student.fc.weight.detach().clone()
    _, val = separable_loaders()
    trainer = _trainer(tmp_path, max_epochs=1, logger=CSVLogger(tmp_path, name="logs", version=0))
    trainer.fit(module, DataLoader(_TwoViews(), batch_size=16, shuffle=True), val)
    assert not torch.equal(module.student.fc.weight.detach(), fc_before)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    last = next(r for r in reversed(rows) if r.get("train/loss_epoch"))
    terms = [float(last[f"train/{name}_epoch"]) for name in ("ce", "kd", "cc", "bc")]
    assert all(math.isfinite(v) and v >= 0 for v in terms)
    assert float(last["train/loss_epoch"]) == pytest.approx(sum(terms), rel=1e-5)
    assert 0.0 <= float(last["train/acc1"]) <= 1.0


def test_mlkd_fit_on_single_views_says_how_to_turn_views_on(tmp_path):
    module = DistillationModule(student=TinyNet(), teacher=TinyNet(width=16), loss=MLKD(), lr_scheduler=None)
    train, val = separable_loaders()
    with pytest.raises(ValueError, match="two_views"):
        _trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False).fit(module, train, val)


# --- on a GPU: no host synchronization in the loss step --------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature")
@pytest.mark.parametrize("index", [0, 1, 2], ids=["DKD", "MLKD", "CTKD"])
def test_cuda_forward_backward_without_host_sync_matches_cpu(index):
    s, t, y = _random_case(64, 100, seed=1)
    s2, t2, _ = _random_case(64, 100, seed=2)
    cpu_loss, cuda_loss = _losses(True)[index], _losses(True)[index].cuda()

    def run(loss, device):
        # inputs copied to the device first: a host-to-device copy is itself a synchronizing operation
        xs = [x.float().to(device) for x in (s, t, s2, t2)]
        targets = y.to(device)

        def step():
            leaves = [x.clone().requires_grad_(i % 2 == 0) for i, x in enumerate(xs)]
            args = ((leaves[0], leaves[2]), (leaves[1], leaves[3])) if index == 1 else (leaves[0], leaves[1])
            terms = loss(*args, targets, epoch=3)
            sum(terms.values()).backward()
            return terms, leaves[0].grad

        return step

    cuda_step = run(cuda_loss, "cuda")
    cuda_step()  # first batch: the target-range check syncs once, by design
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cuda_terms, cuda_grad = cuda_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu_terms, cpu_grad = run(cpu_loss, "cpu")()
    for name, value in cpu_terms.items():
        assert cuda_terms[name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name
    assert torch.allclose(cuda_grad.cpu(), cpu_grad, rtol=1e-3, atol=1e-6)
