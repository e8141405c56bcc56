"""lightning_kd.apps.analysis: the helpers behind the notebooks, on fixed inputs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_kd.apps.analysis import collect_logits, epoch_metrics, std_correlation
from tests.helpers.tiny import TinyNet


def test_epoch_metrics_keeps_each_epochs_last_logged_value(tmp_path):
    csv = tmp_path / "metrics.csv"
    # the CSVLogger layout: one row per logging call, empty cells for keys not logged in that call
    csv.write_text(
        "epoch,step,train/loss_epoch,val/acc1\n0,3,,0.5\n0,3,1.25,\n1,7,,0.75\n1,7,0.5,\n1,7,,0.8\n",
    )
    assert epoch_metrics(csv, ["train/loss_epoch", "val/acc1"]) == {
        "train/loss_epoch": [(0, 1.25), (1, 0.5)],
        "val/acc1": [(0, 0.5), (1, 0.8)],
    }
    with pytest.raises(KeyError, match=r"'val/acc5' is not in .*logged names: \['epoch', 'step'"):
        epoch_metrics(csv, ["val/acc5"])


def test_std_correlation():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 10, generator=g) * torch.linspace(1, 5, 64).unsqueeze(1)
    assert std_correlation(2.0 * teacher + 3.0, teacher) == pytest.approx(1.0, abs=1e-5)  # scaled copy: same ranges
    unrelated = torch.randn(64, 10, generator=g)
    assert abs(std_correlation(unrelated, teacher)) < 0.5


def test_collect_logits_runs_in_eval_mode_and_restores_modes():
    torch.manual_seed(0)
    a, b = TinyNet(), TinyNet(width=4)
    b.eval()
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    logits, targets = collect_logits({"a": a, "b": b}, loader)
    assert torch.equal(targets, y)
    a.eval()
    with torch.no_grad():
        assert torch.allclose(logits["a"], a(x), atol=1e-6)  # eval mode: dropout off, BN running stats
    assert logits["b"].shape == (10, 4)
    a.train()
    logits_again, _ = collect_logits({"a": a}, loader)
    assert a.training  # mode restored
    assert not b.training
    assert not logits_again["a"].requires_grad
