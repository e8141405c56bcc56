"""The fidelity benchmark (benchmarks/fidelity.py): records, resuming, the table and its verdict, and the presets.

The verdict logic is checked exactly on fabricated records; resuming is checked with the CLI subprocess replaced by
a fake that writes a run folder the way the CLI does; one tiny real run (fake CIFAR-100, 2 seeds, 1 epoch, two
batches) goes end to end through ``python benchmarks/fidelity.py`` and ``python -m lightning_kd fit``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.cli import KDLightningCLI
from lightning_kd.losses import DKD, KD
from lightning_kd.models import create_model
from tests.helpers.fake_data import write_fake_cifar100

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "fidelity.py"
PRESETS = REPO / "configs" / "cifar100" / "cpu_scale"
_spec = importlib.util.spec_from_file_location("fidelity", SCRIPT)
fidelity = importlib.util.module_from_spec(_spec)
sys.modules["fidelity"] = fidelity  # dataclasses look their module up there
_spec.loader.exec_module(fidelity)


# ---------------------------------------------------------------------------------------------------------------
# fabricated records: table and verdict


def _preset(folder: Path, name: str) -> Path:
    """A minimal preset file (only its logger is read unless it is run)."""
    path = folder / f"{name}.yaml"
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs/t", "name": name}}
    path.write_text(yaml.safe_dump({"trainer": {"logger": logger}}))
    return path


def _record(results: Path, preset: str, seed: int, best: float, last: float, wall: float = 600.0, **extra) -> Path:
    record = {
        "record_version": 1,
        "status": "complete",
        "preset": preset,
        "preset_path": f"{preset}.yaml",
        "seed": seed,
        "best_top1": best,
        "last_top1": last,
        "val_top1": [last, best],
        "wall_time_s": wall,
        "run_dir": f"runs/t/{preset}/version_{seed}",
        "command": f"python -m lightning_kd fit --config {preset}.yaml --seed_everything {seed}",
        "extra_args": [],
        **extra,
    }
    path = fidelity.record_path(results, preset, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _summarize(tmp_path: Path, names=("ce", "kd", "kd_ls"), seeds=("0", "1", "2")) -> str:
    presets = [str(_preset(tmp_path, name)) for name in names]
    args = ["--presets", *presets, "--seeds", *seeds, "--results-dir", str(tmp_path / "res"), "--summarize-only"]
    return fidelity.main([*args, "--table-out", str(tmp_path / "table.md")])


def test_table_and_verdict_from_fabricated_records(tmp_path):
    res = tmp_path / "res"
    for seed, (ce, kd, ls) in enumerate([(40.5, 44.0, 47.0), (41.0, 45.0, 48.0), (41.5, 46.0, 49.0)]):
        _record(res, "ce", seed, ce, ce - 0.5, wall=60.0 * (10 + seed))
        _record(res, "kd", seed, kd, kd - 1.0)
        _record(res, "kd_ls", seed, ls, ls)
    table = _summarize(tmp_path)
    assert (tmp_path / "table.md").read_text() == table
    lines = table.splitlines()
    assert "| CE | 3 (0, 1, 2) | 41.00 ± 0.50 | 40.50 ± 0.50 | 10.0, 11.0, 12.0 |" in lines
    assert "| KD | 3 (0, 1, 2) | 45.00 ± 1.00 | 44.00 ± 1.00 | 10.0, 10.0, 10.0 |" in lines
    assert "| KD+LS | 3 (0, 1, 2) | 48.00 ± 1.00 | 48.00 ± 1.00 | 10.0, 10.0, 10.0 |" in lines
    assert "Missing runs: none." in lines
    # KD+LS - KD = 3, SE = sqrt(1/3 + 1/3) = 0.816 -> 3.7 SE; KD - CE = 4, SE = sqrt(1/3 + 0.25/3) = 0.645 -> 6.2 SE
    assert lines[-1] == (
        "Verdict: KD+LS beats KD by +3.00 pp = +3.7 SE (SE 0.82, pooled std 1.00, n 3/3); "
        "KD beats CE by +4.00 pp = +6.2 SE (SE 0.65, pooled std 0.79, n 3/3)."
    )


@pytest.mark.parametrize(
    ("better", "baseline", "expected"),
    [
        # +1 pp against SE 0.816: inside the 2-SE band
        (
            [46.0, 47.0, 48.0],
            [45.0, 46.0, 47.0],
            "KD+LS does not clearly beat KD: +1.00 pp = +1.2 SE (SE 0.82, pooled std 1.00, n 3/3), within 2 SE",
        ),
        # -3 pp against SE 0.816: a resolved loss
        (
            [42.0, 43.0, 44.0],
            [45.0, 46.0, 47.0],
            "KD+LS does not beat KD: it is worse by -3.00 pp = -3.7 SE (SE 0.82, pooled std 1.00, n 3/3)",
        ),
        # no spread at all on either side: any positive gain is resolved
        ([47.0, 47.0], [45.0, 45.0], "KD+LS beats KD by +2.00 pp = +inf SE (SE 0.00, pooled std 0.00, n 2/2)"),
        (
            [47.0],
            [45.0, 46.0],
            "KD+LS vs KD: +1.50 pp from 1 and 2 run(s); no seed spread with a single run, no verdict",
        ),
        ([], [45.0, 46.0], "KD+LS vs KD: not measured (no complete run of KD+LS)"),
    ],
)
def test_verdict_rule(better, baseline, expected):
    def summary(name, values):
        n = len(values)
        return fidelity.Summary(name, tuple(range(n)), tuple(values), tuple(values), (1.0,) * n)

    assert fidelity.compare(summary("kd_ls", better), summary("kd", baseline)) == expected


def test_missing_runs_are_listed_and_single_runs_have_no_std(tmp_path):
    res = tmp_path / "res"
    _record(res, "ce", 0, 41.0, 40.0)
    _record(res, "kd", 0, 45.0, 44.0)
    _record(res, "kd", 1, 46.0, 45.0)
    (res / "kd_ls__seed0.json").write_text('{"status": "complete", "preset": "kd_ls", "se')  # cut off mid-write
    lines = _summarize(tmp_path, seeds=("0", "1")).splitlines()
    assert "| CE | 1 (0) | 41.00 (1 run, no std) | 40.00 (1 run, no std) | 10.0 |" in lines
    assert "| KD+LS | 0 | – | – | – |" in lines
    assert "Missing runs: kd_ls seed 0, ce seed 1, kd_ls seed 1." in lines
    assert lines[-1] == (
        "Verdict: KD+LS vs KD: not measured (no complete run of KD+LS); "
        "KD vs CE: +4.50 pp from 2 and 1 run(s); no seed spread with a single run, no verdict."
    )


def test_records_of_another_protocol_are_refused(tmp_path):
    _record(tmp_path / "res", "ce", 0, 41.0, 40.0, extra_args=["--trainer.max_epochs", "1"])
    with pytest.raises(ValueError, match=r"ce__seed0.json was run with extra args \['--trainer.max_epochs', '1'\]"):
        _summarize(tmp_path, names=("ce",), seeds=("0",))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--presets", "nowhere.yaml"], "preset nowhere.yaml does not exist"),
        (["--seeds", "0", "0"], r"--seeds repeats a seed: \[0, 0\]"),
    ],
)
def test_bad_arguments_are_named(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    _preset(tmp_path, "ce")
    base = ["--presets", "ce.yaml", "--seeds", "0", "--results-dir", "res", "--summarize-only"]
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        fidelity.main([*base, *args])


def test_preset_without_a_csv_logger_folder_is_refused(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}}))
    with pytest.raises(ValueError, match=r"bare.yaml: trainer.logger needs a CSVLogger with init_args.save_dir"):
        fidelity.logger_folder(path)


# ---------------------------------------------------------------------------------------------------------------
# resuming, with the CLI subprocess replaced by a fake that writes a run folder like the CLI


class FakeCLI:
    """Stands in for ``subprocess.run`` of the CLI: writes ``runs/t/<preset>/version_N/metrics.csv``."""

    def __init__(self, fail: set[tuple[str, int]] = frozenset()):
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    def __call__(self, command, check):
        preset = Path(command[command.index("--config") + 1]).stem
        seed = int(command[command.index("--seed_everything") + 1])
        self.calls.append((preset, seed))
        if (preset, seed) in self.fail:
            return subprocess.CompletedProcess(command, 1)
        folder = Path("runs/t") / preset
        run = folder / f"version_{len(list(folder.glob('version_*'))) if folder.is_dir() else 0}"
        run.mkdir(parents=True)
        acc = [0.30 + seed / 100, 0.42 + seed / 100, 0.40 + seed / 100]  # best epoch 1, last epoch 2
        rows = ["epoch,step,train/loss_step,val/acc1"] + [f"{e},{10 * e},2.0," for e in range(3)]
        rows += [f"{e},{10 * e + 9},,{a}" for e, a in enumerate(acc)]
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
        return subprocess.CompletedProcess(command, 0)


def _run_plan(tmp_path, monkeypatch, fake: FakeCLI, seeds=("0", "1")) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fidelity.subprocess, "run", fake)
    for name in ("ce", "kd"):
        _preset(tmp_path, name)
    return fidelity.main(["--presets", "ce.yaml", "kd.yaml", "--seeds", *seeds, "--results-dir", "res"])


def test_a_run_writes_a_complete_record(tmp_path, monkeypatch):
    fake = FakeCLI()
    table = _run_plan(tmp_path, monkeypatch, fake, seeds=("1",))
    assert fake.calls == [("ce", 1), ("kd", 1)]
    record = json.loads((tmp_path / "res" / "kd__seed1.json").read_text())
    assert record["status"] == "complete"
    assert record["val_top1"] == pytest.approx([31.0, 43.0, 41.0])
    assert (record["best_top1"], record["last_top1"]) == (pytest.approx(43.0), pytest.approx(41.0))
    assert record["epochs"] == 3
    assert record["run_dir"] == str(Path("runs/t/kd/version_0"))
    assert record["command"] == "python -m lightning_kd fit --config kd.yaml --seed_everything 1"
    assert record["wall_time_s"] >= 0
    assert not list((tmp_path / "res").glob("*.running"))
    assert "| KD | 1 (1) | 43.00 (1 run, no std) | 41.00 (1 run, no std) |" in table
    assert (tmp_path / "res" / "table.md").read_text() == table


def test_resume_runs_only_what_is_missing_and_redoes_interrupted_runs(tmp_path, monkeypatch):
    res = tmp_path / "res"
    _record(res, "ce", 0, 41.0, 40.0)  # finished before the stop
    (res / "kd__seed0.json").write_text('{"preset": "kd", "seed": 0, "best_top1": 4')  # cut off mid-write
    (res / "ce__seed1.running").write_text("{}")  # killed while training: no record, a marker
    _record(res, "kd", 1, 45.0, 44.0, status="running")  # a record that never completed
    fake = FakeCLI()
    table = _run_plan(tmp_path, monkeypatch, fake)
    assert fake.calls == [("kd", 0), ("ce", 1), ("kd", 1)]
    assert json.loads((res / "ce__seed0.json").read_text())["best_top1"] == 41.0  # kept as it was
    for key in ("kd__seed0", "ce__seed1", "kd__seed1"):
        assert json.loads((res / f"{key}.json").read_text())["status"] == "complete"
    assert "Missing runs: none." in table
    # a second call has nothing left to do
    again = FakeCLI()
    _run_plan(tmp_path, monkeypatch, again)
    assert again.calls == []


def test_a_failed_run_stops_the_runner_and_is_redone_next_time(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match=r"kd seed 0 failed with exit code 1: .* --config kd.yaml"):
        _run_plan(tmp_path, monkeypatch, FakeCLI(fail={("kd", 0)}))
    res = tmp_path / "res"
    assert (res / "ce__seed0.json").is_file()
    assert not (res / "kd__seed0.json").exists()
    assert (res / "kd__seed0.running").is_file()
    fake = FakeCLI()
    _run_plan(tmp_path, monkeypatch, fake)
    assert fake.calls == [("kd", 0), ("ce", 1), ("kd", 1)]


def test_a_second_runner_on_the_same_results_is_refused(tmp_path, monkeypatch):
    res = tmp_path / "res"
    res.mkdir()
    with fidelity._exclusive(res / ".runner.lock"), pytest.raises(RuntimeError, match="another fidelity runner"):
        _run_plan(tmp_path, monkeypatch, FakeCLI())


# ---------------------------------------------------------------------------------------------------------------
# one tiny real run end to end: fake CIFAR-100 pickles, a tiny teacher, 2 seeds, 1 epoch of two batches


def _tiny_preset(folder: Path, name: str, data_dir: Path, model: dict) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 3,  # the test passes --trainer.max_epochs 1 through --extra-args
            "limit_train_batches": 2,
            "limit_val_batches": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": f"runs/tiny/{name}",
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "runs/tiny", "name": name},
            },
        },
        "model": model,
        "data": {
            "class_path": "lightning_kd.data.CIFAR100DataModule",
            "init_args": {"data_dir": str(data_dir), "verify_checksums": False, "batch_size": 16, "num_workers": 0},
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_end_to_end_tiny_run(tmp_path):
    data = tmp_path / "data"
    write_fake_cifar100(data, n_train=64, n_test=32)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict(), "epoch": 1}, teacher)
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}
    ce = _tiny_preset(
        tmp_path, "ce", data, {"class_path": "lightning_kd.ClassificationModule", "init_args": {"model": "resnet8"}}
    )
    loss = {"class_path": "lightning_kd.losses.KD", "init_args": {"temperature": 2.0, "standardize": True}}
    distill = {"student": "resnet8", "teacher": "resnet8", "teacher_weights": str(teacher), "loss": loss}
    kd = _tiny_preset(tmp_path, "kd", data, {"class_path": "lightning_kd.DistillationModule", "init_args": {**distill}})
    for path in (ce, kd):  # the optimizer spelled out like in the shipped presets
        config = yaml.safe_load(path.read_text())
        config["model"]["init_args"]["optimizer"] = optimizer
        path.write_text(yaml.safe_dump(config))

    # a stop after two runs: their records exist, so only ce seed 0 and kd seed 1 are trained (one of each module)
    res = tmp_path / "res"
    one_epoch = ["--trainer.max_epochs", "1"]
    kept = {
        "ce__seed1": _record(res, "ce", 1, 3.0, 2.0, extra_args=one_epoch).read_text(),
        "kd__seed0": _record(res, "kd", 0, 5.0, 4.0, extra_args=one_epoch).read_text(),
    }
    command = [sys.executable, str(SCRIPT), "--presets", "ce.yaml", "kd.yaml", "--seeds", "0", "1"]
    command += ["--results-dir", "res", "--extra-args=--trainer.max_epochs 1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skip ce seed 1" in done.stdout
    assert "skip kd seed 0" in done.stdout

    records = {p.stem: json.loads(p.read_text()) for p in res.glob("*.json")}
    assert sorted(records) == ["ce__seed0", "ce__seed1", "kd__seed0", "kd__seed1"]
    for key, text in kept.items():
        assert (res / f"{key}.json").read_text() == text
    assert not list(res.glob("*.running"))
    for key in ("ce__seed0", "kd__seed1"):
        record = records[key]
        assert record["epochs"] == 1
        assert record["extra_args"] == one_epoch
        assert 0.0 <= record["best_top1"] == record["last_top1"] <= 100.0  # a single epoch
        assert record["run_dir"] == str(Path("runs/tiny", record["preset"], "version_0"))
        metrics = (tmp_path / record["run_dir"] / "metrics.csv").read_text()
        assert "val/acc1" in metrics
        assert record["command"] == (
            f"python -m lightning_kd fit --config {record['preset']}.yaml --seed_everything {record['seed']} "
            "--trainer.max_epochs 1"
        )
    table = (res / "table.md").read_text()
    assert done.stdout.endswith(table)
    ce, kd = (fidelity.summarize(list(records.values()), name) for name in ("ce", "kd"))
    assert f"| CE | 2 (0, 1) | {fidelity._mean_std(ce.best)} | {fidelity._mean_std(ce.last)} |" in table
    assert f"| KD | 2 (0, 1) | {fidelity._mean_std(kd.best)} | {fidelity._mean_std(kd.last)} |" in table
    assert table.splitlines()[-1] == f"Verdict: {fidelity.compare(kd, ce)}."


# ---------------------------------------------------------------------------------------------------------------
# the shipped CPU-scale presets


@pytest.mark.parametrize("name", ["ce", "kd", "kd_ls", "dkd", "dkd_ls"])
def test_cpu_scale_presets_follow_the_protocol(name, tmp_path):
    path = PRESETS / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["trainer"]["max_epochs"] == 15
    assert config["trainer"]["logger"]["init_args"] == {"save_dir": "runs/cifar100/cpu_scale", "name": name}
    data = config["data"]["init_args"]
    assert data == {
        "data_dir": "../shared/data",
        "download": False,
        "verify_checksums": False,
        "batch_size": 64,
        "num_workers": 2,
        "drop_last": False,
    }
    fake = tmp_path / "cifar"
    write_fake_cifar100(fake, n_train=20, n_test=10)
    args = ["--config", str(path), f"--data.init_args.data_dir={fake}", "--data.init_args.num_workers=0"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    if name != "ce":
        teacher = tmp_path / "teacher.pth"
        torch.save({"model": create_model("resnet20", num_classes=100).state_dict()}, teacher)
        args.append(f"--model.init_args.teacher_weights={teacher}")
    cli = KDLightningCLI(model_class=None, args=args, run=False, subclass_mode_model=True, subclass_mode_data=True)
    model = cli.model
    optimizer = model.configure_optimizers()
    optimizer, scheduler = optimizer["optimizer"], optimizer["lr_scheduler"]
    scheduler = scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 15
    if name == "ce":
        assert isinstance(model, ClassificationModule)
        assert type(model.network).__name__ == "CifarResNet"
        return
    assert isinstance(model, DistillationModule)
    assert model.hparams["student"] == "resnet8"
    assert model.hparams["teacher"] == "resnet20"
    assert model.hparams["teacher_weights"] == str(teacher.resolve())
    expected = {
        "kd": (KD, {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "standardize": False}),
        "kd_ls": (KD, {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "standardize": True}),
        # warm-up scaled from 20 of 240 epochs to the 15-epoch schedule (see the preset's comment)
        "dkd": (DKD, {"alpha": 1.0, "beta": 2.0, "temperature": 4.0, "warmup": 2, "ce_weight": 1.0}),
        "dkd_ls": (DKD, {"alpha": 18.0, "beta": 36.0, "temperature": 3.0, "warmup": 2, "ce_weight": 1.0}),
    }[name]
    assert isinstance(model.loss, expected[0])
    for arg, value in expected[1].items():
        assert getattr(model.loss, arg) == value, arg
    assert model.loss.standardize == name.endswith("_ls")


def test_started_runs_are_reported_in_progress_or_interrupted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "res"
    res.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that has exited
    started = "2026-01-01T00:00:00+00:00"
    (res / "ce__seed0.running").write_text(json.dumps({"pid": os.getpid(), "started": started}))
    (res / "kd__seed0.running").write_text(json.dumps({"pid": gone.pid, "started": started}))
    older = tmp_path / "runs/t/ce/version_0"  # an earlier run of the preset, before the marker
    older.mkdir(parents=True)
    (older / "config.yaml").write_text("{}")
    os.utime(older / "config.yaml", (0, 0))
    run = tmp_path / "runs/t/ce/version_1"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    (run / "metrics.csv").write_text("epoch,step,val/acc1\n0,9,0.125\n1,19,0.25\n")
    lines = _summarize(tmp_path, names=("ce", "kd"), seeds=("0",)).splitlines()
    assert (
        f"- ce seed 0: in progress (runner pid {os.getpid()}), 2 epoch(s) validated in {Path('runs/t/ce/version_1')}: "
        "top-1 12.50, 25.00" in lines
    )
    assert "- kd seed 0: interrupted (its runner is gone; rerun resumes), no run folder yet" in lines
