"""The thin training step: device-side sums logged per window and per epoch, and the non-finite check."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_kd import DistillationModule
from lightning_kd._train_stats import TrainStepStats
from lightning_kd.losses import KD
from tests.helpers.dispatch import OpCounter
from tests.helpers.tiny import TinyNet, separable_loaders

REPO = Path(__file__).resolve().parents[1]


class _StepRecorder(Callback):
    """Records each step's loss, terms and batch size as the module computed them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _, targets = batch
        self.steps.append({"loss": float(outputs["loss"]), "n": len(targets)})


def _module() -> DistillationModule:
    torch.manual_seed(0)
    return DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=2.0, kd_weight=9.0), lr_scheduler=None)


def test_window_and_epoch_values_are_the_means_of_the_steps(tmp_path):
    recorder = _StepRecorder()
    # 70 samples in batches of 16: four full batches and one of 6 (the epoch mean must weight by batch size)
    train, val = separable_loaders(n=70, batch_size=16)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=CSVLogger(tmp_path, name="logs", version=0),
        callbacks=[recorder],
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = _module()
    trainer.fit(module, train, val)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    step_rows = [r for r in rows if r.get("train/loss_step")]
    losses = [s["loss"] for s in recorder.steps]
    # windows close after steps 2 and 4 (1-based); each value is the mean of its window's steps
    assert [int(r["step"]) for r in step_rows] == [1, 3]
    assert float(step_rows[0]["train/loss_step"]) == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-5)
    assert float(step_rows[1]["train/loss_step"]) == pytest.approx((losses[2] + losses[3]) / 2, rel=1e-5)
    epoch_row = next(r for r in rows if r.get("train/loss_epoch"))
    sizes = [s["n"] for s in recorder.steps]
    expected = sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
    assert float(epoch_row["train/loss_epoch"]) == pytest.approx(expected, rel=1e-5)
    assert {"train/ce_epoch", "train/kd_epoch", "train/acc1"} <= set(epoch_row)
    assert 0.0 <= float(epoch_row["train/acc1"]) <= 1.0


def test_training_steps_log_only_when_a_window_closes(tmp_path, monkeypatch):
    module = _module()
    calls: list[str] = []
    original = DistillationModule.log

    def counting_log(self, name, *args, **kwargs):
        calls.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(DistillationModule, "log", counting_log)
    train, _ = separable_loaders(n=160, batch_size=16)  # 10 steps
    Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, train)
    step_calls = [c for c in calls if c.endswith("_step")]
    # 2 windows x (loss, ce, kd); nothing is logged in the other 8 steps
    assert len(step_calls) == 6
    assert calls.count("train/loss_epoch") == 1


def test_accuracy_counts_correct_top1_predictions():
    stats = TrainStepStats()
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    correct = (logits.argmax(-1) == targets).sum()
    stats.add(torch.tensor(1.0), {"ce": torch.tensor(1.0)}, correct, batch_size=3)
    means, accuracy = stats.means(stats.epoch_sums())
    assert accuracy.item() == pytest.approx(2 / 3)
    assert means["loss"].item() == pytest.approx(1.0)


def test_terms_must_keep_their_names():
    stats = TrainStepStats()
    stats.add(torch.tensor(1.0), {"ce": torch.tensor(1.0)}, torch.tensor(0), batch_size=1)
    with pytest.raises(ValueError, match=r"returned the terms \('kd',\) after \('ce',\)"):
        stats.add(torch.tensor(1.0), {"kd": torch.tensor(1.0)}, torch.tensor(0), batch_size=1)


class _NaNAfter(KD):
    """KD whose loss turns NaN from a given call on (a diverging run)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def forward(self, student_logits, teacher_logits, targets, *, epoch=1):
        terms = super().forward(student_logits, teacher_logits, targets, epoch=epoch)
        self.calls += 1
        if self.calls > self.after:
            terms["kd"] = terms["kd"] * float("nan")
        return terms


def test_non_finite_loss_stops_with_epoch_and_steps_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    module = DistillationModule(TinyNet(), TinyNet(width=16), _NaNAfter(after=6), lr_scheduler=None)
    train, val = separable_loaders(n=64, batch_size=16)  # 4 steps per epoch: NaN from step 7 (epoch 2)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        log_every_n_steps=50,  # no window closes inside an epoch: the epoch's last step checks
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(FloatingPointError, match=r"epoch 2, global steps 4\.\.7: terms \['loss'.*'kd'\]"):
        trainer.fit(module, train, val)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # written after epoch 1, never overwritten by the diverged epoch
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_a_step_adds_with_two_operators_and_the_sums_stay_exact():
    stats = TrainStepStats()
    loss = torch.tensor(3.0, requires_grad=True) * 1.0  # a loss with an autograd graph, as in training
    terms = {"ce": loss / 3, "kd": loss * 2 / 3}
    stats.add(loss, terms, torch.tensor(5.0), batch_size=8)  # the first step creates the buffers
    correct = torch.tensor(2.0)
    with OpCounter() as counter:
        stats.add(loss, terms, correct, batch_size=8)
    assert counter.ops == ["stack", "addcmul_"]
    stats.add(loss, terms, torch.tensor(1), batch_size=4)  # a partial batch, an integer count
    sums = stats.epoch_sums()
    torch.testing.assert_close(sums, torch.tensor([3.0 * 20, 1.0 * 20, 2.0 * 20, 8.0, 20.0]))
    sums.zero_()  # a collective may reduce the returned sums in place: the running sums are not touched
    means, accuracy = stats.window_means()
    assert means["loss"].item() == pytest.approx(3.0)
    assert accuracy.item() == pytest.approx(8 / 20)


def test_op_count_benchmark_module_step_is_close_to_the_reference_and_below_it_when_folded():
    spec = importlib.util.spec_from_file_location("op_count", REPO / "benchmarks" / "op_count.py")
    op_count = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(op_count)
    result = op_count.main(["--batch-size", "1", "--counted-step", "2", "--rounds", "1"])
    # what the module adds per step: the correct count (3 operators), the sums (2), Lightning's closure (5)
    assert result["ops_module"] - result["ops_reference"] <= 12
    # 34 BatchNorms of resnet32x4 folded away
    assert result["ops_module_folded"] <= result["ops_module"] - 34
    # the fast path around its graph replay: the batch fetch, the device augmentation (27), 2 copies into the graph's
    # buffers, the running sums (2)
    assert 0 < result["ops_fast_outside_graph"] <= 40
