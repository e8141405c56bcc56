"""LogitStatistics: its numbers against a direct computation, device reduction, histograms, and a real fit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_kd import DistillationModule
from lightning_kd.callbacks import LogitStatistics, per_sample_stats
from lightning_kd.losses import CTKD, KD
from tests.helpers.tiny import TinyNet, separable_loaders

K = 10


def _batches(seed: int = 0, sizes: tuple[int, ...] = (8, 8, 5)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed (student, teacher) logit batches with different per-sample scales and shifts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        teacher = torch.randn(n, K, generator=g) * (1 + 4 * torch.rand(n, 1, generator=g)) + 3 * torch.randn(n, 1)
        student = 0.5 * teacher + torch.randn(n, K, generator=g)
        out.append((student, teacher))
    return out


class _Recorder:
    """Stands in for the LightningModule: records what the callback logs."""

    def __init__(self, loss=None) -> None:
        self.loss = loss
        self.teacher_in_validation = False
        self.logged: dict[str, float] = {}

    def log_dict(self, metrics, sync_dist=False) -> None:
        self.logged.update({k: float(v) for k, v in metrics.items()})


def _fake_trainer(reduce=lambda t, reduce_op: t, sanity_checking: bool = False):
    return SimpleNamespace(
        sanity_checking=sanity_checking,
        strategy=SimpleNamespace(reduce=reduce),
        is_global_zero=True,
        loggers=[],
        global_step=0,
    )


def _run_epoch(callback, trainer, module, batches) -> None:
    callback.on_validation_epoch_start(trainer, module)
    for i, (s, t) in enumerate(batches):
        outputs = {"student_logits": s, "teacher_logits": t, "targets": torch.zeros(len(s), dtype=torch.long)}
        callback.on_validation_batch_end(trainer, module, outputs, None, i)
    callback.on_validation_epoch_end(trainer, module)


def _expected(student: torch.Tensor, teacher: torch.Tensor, tau: float | None) -> dict[str, float]:
    """The statistics computed directly on the whole set, the plain way."""
    out = {}
    for role, x in (("student", student), ("teacher", teacher)):
        mean = x.double().mean(dim=1)
        std = x.double().std(dim=1)  # unbiased, as the z-score
        out[f"logits/{role}_mean"] = mean.mean().item()
        out[f"logits/{role}_mean_spread"] = mean.std().item()
        out[f"logits/{role}_std"] = std.mean().item()
        out[f"logits/{role}_std_spread"] = std.std().item()
        if tau is not None:
            out[f"logits/{role}_temperature"] = (tau * std).mean().item()
            out[f"logits/{role}_temperature_spread"] = (tau * std).std().item()
    out["logits/agreement"] = (student.argmax(1) == teacher.argmax(1)).double().mean().item()
    return out


def test_per_sample_stats_is_unbiased():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, std = per_sample_stats(x)
    assert mean.item() == pytest.approx(3.0)
    assert std.item() == pytest.approx((14 / 3) ** 0.5)  # squared deviations 4+1+0+9 over K-1 = 3


@pytest.mark.parametrize(("standardize", "tau"), [(True, 2.0), (False, None)])
def test_statistics_match_direct_computation(standardize, tau):
    batches = _batches()
    module = _Recorder(loss=KD(temperature=2.0, kd_weight=9.0, standardize=standardize))
    _run_epoch(LogitStatistics(), _fake_trainer(), module, batches)
    student = torch.cat([s for s, _ in batches])
    teacher = torch.cat([t for _, t in batches])
    expected = _expected(student, teacher, tau)
    assert set(module.logged) == set(expected)
    for name, value in expected.items():
        assert module.logged[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # the fixture really has spread and disagreement, so the assertions above are not trivially met
    assert 0.0 < module.logged["logits/agreement"] < 1.0
    assert module.logged["logits/teacher_std_spread"] > 0.5


def test_learned_temperature_of_ctkd_is_used():
    loss = CTKD(standardize=True)
    module = _Recorder(loss=loss)
    batches = _batches()
    _run_epoch(LogitStatistics(), _fake_trainer(), module, batches)
    tau = loss.current_temperature().item()
    std = torch.cat([s for s, _ in batches]).double().std(dim=1)
    assert module.logged["logits/student_temperature"] == pytest.approx((tau * std).mean().item(), rel=1e-5)


def test_sums_are_reduced_across_processes():
    # two "processes" see different halves; the strategy's reduce sums their vectors
    batches = _batches(sizes=(6, 7, 4, 9))
    other = LogitStatistics()
    other_module = _Recorder()
    other.on_validation_epoch_start(None, other_module)
    for s, t in batches[2:]:
        other.update(s, t)

    def reduce(t, reduce_op):
        assert reduce_op == "sum"
        return t + other._sums

    module = _Recorder(loss=KD(temperature=3.0, standardize=True))
    _run_epoch(LogitStatistics(), _fake_trainer(reduce=reduce), module, batches[:2])
    expected = _expected(torch.cat([s for s, _ in batches]), torch.cat([t for _, t in batches]), 3.0)
    for name, value in expected.items():
        assert module.logged[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_student_only_when_teacher_logits_are_absent():
    module = _Recorder()
    callback = LogitStatistics()
    callback.on_validation_epoch_start(None, module)
    s, _ = _batches()[0]
    callback.on_validation_batch_end(_fake_trainer(), module, {"student_logits": s, "teacher_logits": None}, None, 0)
    callback.on_validation_epoch_end(_fake_trainer(), module)
    assert set(module.logged) == {
        "logits/student_mean",
        "logits/student_mean_spread",
        "logits/student_std",
        "logits/student_std_spread",
    }


def test_sanity_check_is_skipped():
    module = _Recorder()
    _run_epoch(LogitStatistics(), _fake_trainer(sanity_checking=True), module, _batches())
    assert module.logged == {}


def test_setup_asks_for_teacher_logits_every_epoch():
    module = _Recorder()
    LogitStatistics().setup(_fake_trainer(), module, "fit")
    assert module.teacher_in_validation is True


def test_histogram_sample_is_bounded():
    callback = LogitStatistics(histogram_samples=11)
    callback.on_validation_epoch_start(None, None)
    for s, t in _batches(sizes=(8, 8, 8)):
        callback.update(s, t)
    assert {name: sum(len(p) for p in parts) for name, parts in callback._samples.items()} == dict.fromkeys(
        ["student_mean", "student_std", "teacher_mean", "teacher_std"], 11
    )


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        (None, "validation_step to return a dict.*returned NoneType"),
        ({"student_logits": torch.zeros(4, K), "teacher_logits": torch.zeros(4, K + 1)}, r"same shape.*\(4, 11\)"),
    ],
)
def test_bad_outputs_are_named(outputs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        LogitStatistics().on_validation_batch_end(_fake_trainer(), _Recorder(), outputs, None, 0)


def test_negative_histogram_samples_is_an_error():
    with pytest.raises(ValueError, match=r"histogram_samples.*-1"):
        LogitStatistics(histogram_samples=-1)


def _val_logits(module: DistillationModule, loader) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval()
    with torch.no_grad():
        xs = torch.cat([x for x, _ in loader])
        return module.student(xs), module.teacher(xs)


def test_real_fit_logs_statistics_of_the_validation_set(tmp_path: Path):
    torch.manual_seed(0)
    module = DistillationModule(
        student=TinyNet(),
        teacher=TinyNet(width=16),
        loss=KD(temperature=2.0, kd_weight=9.0, standardize=True),
        lr_scheduler=None,
    )
    train, val = separable_loaders()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=[CSVLogger(tmp_path, name="csv", version=0), TensorBoardLogger(tmp_path, name="tb", version=0)],
        callbacks=[LogitStatistics(histogram_samples=16)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, train, val)
    assert module.teacher_in_validation is True
    # the last validation ran after the last training step: same weights as now
    student, teacher = _val_logits(module, val)
    for name, value in _expected(student, teacher, 2.0).items():
        assert trainer.callback_metrics[name].item() == pytest.approx(value, rel=1e-4, abs=1e-5), name
    # logged once per validation epoch to the CSV file, and as histograms to TensorBoard
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("logits/teacher_std")
    assert sum(1 for row in rows[1:] if row.split(",")[column]) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"histograms": 0}).Reload()
    assert "logits_hist/student_temperature" in events.Tags()["histograms"]
    assert [e.histogram_value.num for e in events.Histograms("logits_hist/teacher_std")] == [16.0, 16.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_update_does_not_synchronize_with_the_host():
    callback = LogitStatistics(histogram_samples=8)
    callback.on_validation_epoch_start(None, None)
    batches = [(s.to("cuda"), t.to("cuda")) for s, t in _batches()]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host synchronization raises
    try:
        for s, t in batches:
            outputs = {"student_logits": s, "teacher_logits": t, "targets": None}
            callback.on_validation_batch_end(_fake_trainer(), _Recorder(), outputs, None, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    module = _Recorder(loss=KD(temperature=2.0, standardize=True))
    callback.on_validation_epoch_end(_fake_trainer(), module)
    student = torch.cat([s for s, _ in batches]).cpu()
    teacher = torch.cat([t for _, t in batches]).cpu()
    for name, value in _expected(student, teacher, 2.0).items():
        assert module.logged[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
