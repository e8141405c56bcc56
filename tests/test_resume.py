"""Exact resume: stopping after epoch 1 and resuming from ``last.ckpt`` gives the uninterrupted run's result.

The digits are shuffled and randomly shifted (``max_shift=2``) and the student has dropout, so the random
stream matters: Lightning does not checkpoint it, :class:`RandomStateCheckpoint` does.
"""

from __future__ import annotations

import csv
import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_kd import DistillationModule
from lightning_kd.callbacks.rng_state import RandomStateCheckpoint
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import CTKD, KD
from lightning_kd.models import create_model

EPOCHS = 3
LOSSES = {
    "kd": lambda: KD(temperature=4.0, ce_weight=0.5, kd_weight=0.5),
    # a learnable temperature (a loss parameter in the optimizer) and a gradient-reversal schedule over epochs
    "ctkd": lambda: CTKD(decay_epochs=2, ce_weight=0.5, kd_weight=0.5),
}


class _DigitNet(nn.Module):
    """conv -> BN -> ReLU -> 2x2 max-pool -> dropout -> linear: learns the 8x8 digits in a few steps."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.dropout = nn.Dropout(0.2)  # the model draws random numbers too
        self.fc = nn.Linear(width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x).flatten(1)))


class _BestAtStart(Callback):
    """The best-accuracy tracker as the first training epoch of a (resumed) fit finds it."""

    def __init__(self) -> None:
        self.best: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.best is None:
            self.best = float(pl_module.val_acc1_best.max_value)  # -inf when nothing was tracked


def _module(loss: str) -> DistillationModule:
    torch.manual_seed(1)
    teacher = _DigitNet(width=16)
    torch.manual_seed(2)
    student = _DigitNet()
    return DistillationModule(
        student,
        teacher,
        LOSSES[loss](),
        optimizer=functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2], gamma=0.1),
    )


def _fit(tmp_path: Path, run: str, loss: str, max_epochs: int, ckpt_path: Path | None = None, rng_callback=True):
    """Seed, build and fit as a fresh process would; return the module and the run's checkpoint folder."""
    seed_everything(0, workers=True)
    module = _module(loss)
    data = DigitsDataModule(batch_size=32, image_size=8, max_shift=2, seed=0)
    checkpoints = tmp_path / run / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/acc1", mode="max"),
        # Lightning 2.6 refreshes a monitored callback's `save_last` file only when the monitored value improved;
        # an unmonitored one writes every epoch
        ModelCheckpoint(dirpath=checkpoints, filename="last", enable_version_counter=False),
        _BestAtStart(),
    ]
    if rng_callback:
        callbacks.append(RandomStateCheckpoint())
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=6,
        deterministic=True,
        log_every_n_steps=2,
        logger=CSVLogger(tmp_path, name=run, version=0),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    module.best_at_start = callbacks[2].best
    return module, checkpoints


def _epoch_metrics(tmp_path: Path, run: str, name: str) -> list[float]:
    with open(tmp_path / run / "version_0" / "metrics.csv") as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module", params=sorted(LOSSES))
def runs(request, tmp_path_factory):
    """An uninterrupted 3-epoch run, and a 1-epoch run resumed from its last.ckpt to epoch 3."""
    loss, tmp_path = request.param, tmp_path_factory.mktemp(request.param)
    full, full_dir = _fit(tmp_path, "full", loss, EPOCHS)
    part, part_dir = _fit(tmp_path, "part", loss, 1)
    stopped = torch.load(part_dir / "last.ckpt", weights_only=True)
    resumed, resumed_dir = _fit(tmp_path, "resumed", loss, EPOCHS, ckpt_path=part_dir / "last.ckpt")
    return tmp_path, loss, full, full_dir, resumed, resumed_dir, stopped, part


def test_resumed_student_matches_the_uninterrupted_run(runs):
    _, loss, full, _, resumed, _, stopped, _ = runs
    assert stopped["epoch"] == 0  # stopped after the first epoch
    assert _max_abs_diff(full.student.state_dict(), resumed.student.state_dict()) <= 1e-6
    # the training did move the student after the resume point
    assert (
        _max_abs_diff(
            resumed.student.state_dict(),
            {k[8:]: v for k, v in stopped["state_dict"].items() if k.startswith("student.")},
        )
        > 1e-3
    )
    if loss == "ctkd":
        assert torch.allclose(full.loss.theta, resumed.loss.theta, atol=1e-6, rtol=0)
        assert full.loss.current_temperature().item() == pytest.approx(resumed.loss.current_temperature().item())


def test_resumed_optimizer_scheduler_and_counters_match(runs):
    _, _, _, full_dir, _, resumed_dir, _, _ = runs
    full = torch.load(full_dir / "last.ckpt", weights_only=True)
    resumed = torch.load(resumed_dir / "last.ckpt", weights_only=True)
    assert (full["epoch"], full["global_step"]) == (resumed["epoch"], resumed["global_step"]) == (EPOCHS - 1, 18)
    full_opt, resumed_opt = full["optimizer_states"][0], resumed["optimizer_states"][0]
    assert full_opt["state"].keys() == resumed_opt["state"].keys()
    for index, state in full_opt["state"].items():
        assert torch.allclose(state["momentum_buffer"], resumed_opt["state"][index]["momentum_buffer"], atol=1e-6)
    assert full["lr_schedulers"] == resumed["lr_schedulers"]
    assert full["lr_schedulers"][0]["_last_lr"] == [pytest.approx(0.02)]  # the milestone at epoch 2 was applied


def test_resumed_metrics_match(runs):
    tmp_path = runs[0]
    full_acc = _epoch_metrics(tmp_path, "full", "val/acc1")
    part_acc = _epoch_metrics(tmp_path, "part", "val/acc1")
    resumed_acc = _epoch_metrics(tmp_path, "resumed", "val/acc1")
    assert len(full_acc) == EPOCHS
    assert part_acc + resumed_acc == pytest.approx(full_acc, abs=1e-6)
    full_best = _epoch_metrics(tmp_path, "full", "val/acc1_best")
    assert full_best[-1] == pytest.approx(max(full_acc), abs=1e-6)


def test_best_accuracy_tracker_continues_after_resume(runs):
    """val/acc1_best after a resume is the best over all epochs, the stopped run's included."""
    tmp_path, resumed = runs[0], runs[4]
    part_acc = _epoch_metrics(tmp_path, "part", "val/acc1")
    # the tracker is restored from the checkpoint, not restarted at the resume point
    assert resumed.best_at_start == pytest.approx(part_acc[0], abs=1e-7)
    full_best = _epoch_metrics(tmp_path, "full", "val/acc1_best")
    assert _epoch_metrics(tmp_path, "resumed", "val/acc1_best") == pytest.approx(full_best[1:], abs=1e-6)


def test_without_the_random_states_the_resumed_run_differs(tmp_path):
    """The control: what RandomStateCheckpoint is for (Lightning itself does not save the random stream)."""
    full, _ = _fit(tmp_path, "full", "kd", 2, rng_callback=False)
    _, part_dir = _fit(tmp_path, "part", "kd", 1, rng_callback=False)
    with pytest.warns(UserWarning, match="written without RandomStateCheckpoint"):
        resumed, _ = _fit(tmp_path, "resumed", "kd", 2, ckpt_path=part_dir / "last.ckpt")
    assert _max_abs_diff(full.student.state_dict(), resumed.student.state_dict()) > 1e-4


# ---------------------------------------------------------------- a run killed with SIGTERM


ROOT = Path(__file__).resolve().parents[1]
SIGTERM_CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 3
  limit_train_batches: 20
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {root}/runs/sig/kd
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: {root}/runs/sig
      name: kd
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        filename: last
        enable_version_counter: false
    - class_path: lightning_kd.callbacks.rng_state.RandomStateCheckpoint
    - class_path: tests.helpers.slow.SlowBatches
      init_args:
        seconds: 0.1
model:
  class_path: lightning_kd.DistillationModule
  init_args:
    student: resnet8
    teacher: resnet8
    teacher_weights: {teacher}
    lr_scheduler: null
    loss:
      class_path: lightning_kd.losses.KD
data:
  class_path: lightning_kd.data.DigitsDataModule
  init_args:
    batch_size: 32
    image_size: 8
    max_shift: 2
"""


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_kd", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_mid_epoch_then_resume_from_last_checkpoint_completes(tmp_path):
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(1)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher)
    config = tmp_path / "sig.yaml"
    config.write_text(SIGTERM_CONFIG.format(root=tmp_path, teacher=teacher))
    last = tmp_path / "runs/sig/kd/version_0/checkpoints/last.ckpt"

    run = _cli(["fit", "--config", str(config)])
    deadline = time.monotonic() + 300
    while not last.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), run.communicate()[0][-3000:] if run.poll() is not None else "no checkpoint in time"
    time.sleep(0.5)  # the checkpoint is written whole from memory; the run is now in epoch 2 (>= 2 s of batches)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=300)
    stopped = torch.load(last, weights_only=True)
    assert stopped["epoch"] == 0, "the run was not stopped during epoch 2"
    assert stopped["global_step"] == 20
    # Lightning 2.6 stops after the current batch (SIGTERMException) and saves nothing: the epoch-1 file stays
    assert "Received SIGTERM" in output
    with open(last.parent.parent / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert not any(row["epoch"] == "1" and row.get("val/acc1") for row in rows)  # epoch 2 never finished

    resumed = _cli(["fit", "--config", str(config), "--ckpt_path", str(last)])
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    finished = torch.load(tmp_path / "runs/sig/kd/version_1/checkpoints/last.ckpt", weights_only=True)
    assert (finished["epoch"], finished["global_step"]) == (2, 60)
    assert all(torch.isfinite(v).all() for v in finished["state_dict"].values() if v.is_floating_point())
    # the stopped run's files are untouched by the resumed one
    assert torch.load(last, weights_only=True)["global_step"] == 20
