"""The ViT table's optimizer pieces in lightning_kd.optim: the warm-up + cosine schedule and selective weight decay."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kd.models import create_model
from lightning_kd.optim import SelectiveDecayAdamW, SelectiveDecaySGD, WarmupCosineLR, decays, weight_decay_groups


def pycls_epoch_lr(epoch: int) -> float:
    """The DeiT-Ti config's rate at 0-indexed ``epoch``, written from the reference's numbers: BASE_LR 5e-4,
    MIN_LR 5e-6, MAX_EPOCH 300, WARMUP_EPOCHS 20, WARMUP_FACTOR 0.001 (timm CosineLRScheduler, stepped per epoch)."""
    base, low, total, warm = 5e-4, 5e-6, 300, 20
    start = 0.001 * base
    if epoch < warm:
        return start + epoch * (base - start) / warm
    if epoch >= total:
        return low
    return low + (base - low) * (1 + math.cos(math.pi * epoch / total)) / 2


def _rates(scheduler_args: dict, epochs: int, base_lr: float = 5e-4) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=base_lr)
    scheduler = WarmupCosineLR(optimizer, **scheduler_args)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # once per epoch, as the modules step every scheduler
    return rates


DEIT = {"max_epochs": 300, "warmup_epochs": 20, "warmup_factor": 0.001, "min_lr": 5e-6}


def test_golden_rate_of_every_epoch():
    rates = _rates(DEIT, 305)
    for epoch, rate in enumerate(rates):
        assert rate == pytest.approx(pycls_epoch_lr(epoch), rel=1e-12, abs=0), epoch
    # a few hand-checked values: the warm-up's start, its last epoch, the cosine right after it, the last epoch
    assert rates[0] == pytest.approx(5e-7)
    assert rates[19] == pytest.approx(5e-7 + 19 * (5e-4 - 5e-7) / 20)
    assert rates[20] == pytest.approx(5e-6 + 0.5 * 4.95e-4 * (1 + math.cos(math.pi / 15)))
    assert rates[299] == pytest.approx(5e-6 + 0.5 * 4.95e-4 * (1 + math.cos(math.pi * 299 / 300)))
    assert rates[300:] == [5e-6] * 5


def test_the_rates_are_timm_cosine_scheduler_stepped_as_the_reference_trainer():
    """pycls/core/optimizer.py builds timm's CosineLRScheduler; pycls/core/trainer.py calls step(epoch + 1)."""
    cosine = pytest.importorskip("timm.scheduler.cosine_lr")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=5e-4)
    reference = cosine.CosineLRScheduler(optimizer, t_initial=300, lr_min=5e-6, warmup_t=20, warmup_lr_init=5e-7)
    expected = []
    for epoch in range(305):
        expected.append(optimizer.param_groups[0]["lr"])
        reference.step(epoch + 1)
    assert _rates(DEIT, 305) == pytest.approx(expected, rel=1e-12, abs=0)


def test_teacher_schedule_is_a_plain_cosine_to_zero():
    rates = _rates({"max_epochs": 300, "warmup_epochs": 0, "min_lr": 0.0}, 300, base_lr=0.1)
    assert rates[0] == 0.1
    assert rates[150] == pytest.approx(0.05)
    assert rates[299] == pytest.approx(0.05 * (1 + math.cos(math.pi * 299 / 300)))


def test_each_group_warms_up_from_its_own_rate_and_resuming_continues_the_sequence():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 1e-3}], lr=5e-4)
    scheduler = WarmupCosineLR(optimizer, **DEIT)
    for epoch in range(1, 26):
        optimizer.step()
        scheduler.step()
        if epoch == 10:  # in the warm-up, each group from warmup_factor times its own base rate
            assert optimizer.param_groups[0]["lr"] == pytest.approx(pycls_epoch_lr(10))
            assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-6 + 10 * (1e-3 - 1e-6) / 20)
    # the cosine ends at the same absolute min_lr for every group
    assert optimizer.param_groups[0]["lr"] == pytest.approx(pycls_epoch_lr(25))
    assert optimizer.param_groups[1]["lr"] == pytest.approx(5e-6 + (1e-3 - 5e-6) * (1 + math.cos(math.pi / 12)) / 2)
    state = scheduler.state_dict()

    fresh = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 1e-3}], lr=5e-4)
    resumed = WarmupCosineLR(fresh, **DEIT)
    resumed.load_state_dict(state)
    fresh.step()
    resumed.step()
    assert fresh.param_groups[0]["lr"] == pytest.approx(pycls_epoch_lr(26))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_epochs": 0}, r"max_epochs must be an integer >= 1"),
        ({"max_epochs": 10, "warmup_epochs": 10}, r"warmup_epochs must be an integer in \[0, max_epochs\) = \[0, 10\)"),
        ({"max_epochs": 10, "warmup_factor": -0.1}, r"warmup_factor must be a finite number >= 0"),
        ({"max_epochs": 10, "min_lr": float("nan")}, r"min_lr must be a finite number >= 0"),
    ],
)
def test_bad_schedule_arguments_are_refused(kwargs, message):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=message):
        WarmupCosineLR(optimizer, **kwargs)


REFERENCE_NO_DECAY_NAMES = ("cls_token", "pos_embed", "dist_token")


@pytest.mark.parametrize("name", ["deit_tiny_distilled", "pit_tiny", "pvt_tiny", "t2t_vit_7", "resnet56_pycls"])
def test_shape_rule_picks_the_tensors_the_reference_exempts_by_name(name):
    """pycls/core/optimizer.py: no decay for 1-D tensors, biases and the token / position-embedding parameters."""
    pytest.importorskip("timm")
    model = create_model(name, num_classes=100)
    for param_name, param in model.named_parameters():
        skipped = any(key in param_name for key in REFERENCE_NO_DECAY_NAMES)
        by_name = param.ndim == 1 or param_name.endswith(".bias") or skipped
        assert decays(param) is not by_name, param_name


def test_selective_decay_adamw_steps_as_adamw_with_the_reference_groups():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    token = torch.nn.Parameter(torch.randn(1, 1, 8))
    params = [*model.parameters(), token]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = SelectiveDecayAdamW(params, lr=0.1, weight_decay=0.5)
    reference = torch.optim.AdamW(
        [{"params": [twins[0], twins[4]], "weight_decay": 0.5}, {"params": [twins[i] for i in (1, 2, 3, 5, 6)]}],
        lr=0.1,
        weight_decay=0.0,
    )
    assert [len(group["params"]) for group in ours.param_groups] == [5, 2]
    assert [group["weight_decay"] for group in ours.param_groups] == [0.0, 0.5]
    for p, q in zip(params, twins, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    ours.step()
    reference.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_selective_decay_sgd_keeps_the_sgd_settings():
    layer = torch.nn.Conv2d(3, 4, 3)
    optimizer = SelectiveDecaySGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    assert [(len(g["params"]), g["weight_decay"], g["nesterov"]) for g in optimizer.param_groups] == [
        (1, 0.0, True),
        (1, 5e-4, True),
    ]
    assert weight_decay_groups([layer.weight], 0.1)[1]["params"] == [layer.weight]
