"""Weights & Biases: offline runs record the config, the metrics and student-only checkpoint artifacts.

The offline run's records are read back from its transaction log (``run-<id>.wandb``), which is what
``wandb sync`` uploads: wandb 0.31 writes no ``config.yaml`` or ``wandb-summary.json`` offline, and no longer
ships a Python reader of that file, so :func:`read_offline_run` parses its framing (LevelDB-log style blocks of
32 KiB, records split into FULL / FIRST / MIDDLE / LAST chunks) and decodes each record with wandb's protobuf.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

wandb = pytest.importorskip("wandb")  # the `wandb` extra (installed with `dev`)
from lightning.pytorch.loggers import WandbLogger  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.callbacks import LogitStatistics  # noqa: E402
from lightning_kd.cli import main  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from tests.helpers.tiny import TinyNet, separable_loaders  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WANDB_YAML = REPO / "configs" / "loggers" / "wandb.yaml"
_BLOCK, _HEADER, _FILE_HEADER = 32768, 7, 7  # LevelDB-log framing of wandb's transaction log
_FULL, _LAST = 1, 4


@dataclass
class OfflineRun:
    """What an offline run recorded: its config, the keys of its history rows, and its artifacts."""

    config: dict[str, object] = field(default_factory=dict)
    history: list[dict[str, object]] = field(default_factory=list)
    artifacts: list[wandb_internal_pb2.ArtifactRecord] = field(default_factory=list)

    @property
    def history_keys(self) -> set[str]:
        return {key for row in self.history for key in row}


def _chunks(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a wandb transaction log (no ':W&B' header)")
    pos, record = _FILE_HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        record += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            yield record
            record = b""


def read_offline_run(save_dir: Path) -> OfflineRun:
    """Parse the single offline run under ``save_dir/wandb``."""
    (path,) = sorted((save_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run = OfflineRun()
    for chunk in _chunks(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
    return run


def _finish_and_read(save_dir: Path) -> OfflineRun:
    wandb.finish()
    # the service writes the transaction log asynchronously: wait for it to stop before reading
    wandb.teardown()
    return read_offline_run(save_dir)


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """Offline W&B with every file of it (runs, staged artifacts, settings) under ``tmp_path``."""
    for var, sub in [("WANDB_DIR", "wandb_dir"), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks run as fast on one thread, and the test suite shares the CPU
    # wandb's background service resolves relative paths (the preset's `save_dir: runs`) against its own working
    # directory: start a fresh one for this test, in the test's directory
    wandb.teardown()
    yield tmp_path
    wandb.finish()  # Lightning leaves the run open; a later test must not log into it
    wandb.teardown()
    torch.set_num_threads(threads)


LOSS_TERMS = {f"train/{term}_{when}" for term in ("loss", "ce", "kd") for when in ("step", "epoch")}
METRICS = {"train/acc1", "val/loss", "val/acc1", "val/acc5", "val/acc1_best", "teacher/val_acc1"}
LOGIT_STATS = {"logits/agreement", "logits/student_std", "logits/teacher_std", "logits/student_temperature"}


def test_python_module_run_records_config_metrics_and_student_only_artifact(offline_wandb):
    torch.manual_seed(0)
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=2.0, kd_weight=9.0, standardize=True))
    logger = WandbLogger(project="lightning-kd-tests", save_dir=offline_wandb, log_model=True)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=offline_wandb,
        logger=[CSVLogger(offline_wandb, name="run"), logger],
        callbacks=[
            ModelCheckpoint(filename="best", monitor="val/acc1", mode="max", save_last=True),
            LearningRateMonitor(logging_interval="epoch"),
            LogitStatistics(histogram_samples=32),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, *separable_loaders())
    # the CSV logger is first: it still owns the run folder and the checkpoints
    assert Path(trainer.checkpoint_callback.dirpath) == offline_wandb / "run" / "version_0" / "checkpoints"
    run = _finish_and_read(offline_wandb)

    # the whole hyperparameter record, loss settings included (`kd_weight` was once missing)
    assert run.config["loss.kd_weight"] == 9.0
    assert run.config["loss.temperature"] == 2.0
    assert run.config["loss.standardize"] is True
    assert run.config["loss.class_path"].endswith("KD")
    assert {"optimizer.class_path", "lr_scheduler.class_path", "num_classes"} <= set(run.config)
    assert dict(module.hparams) == dict(module.hparams_initial)
    for key, value in module.hparams_initial.items():
        assert run.config[key] == value, key

    keys = run.history_keys
    assert LOSS_TERMS | METRICS | LOGIT_STATS | {"lr-SGD"} <= keys, sorted(LOSS_TERMS | METRICS - keys)
    # LogitStatistics' histograms: wandb.Histogram objects, one per validation epoch, of the bounded sample
    hists = [row for row in run.history if row.get("logits_hist/teacher_std/_type") == "histogram"]
    assert [sum(row["logits_hist/teacher_std/values"]) for row in hists] == [32, 32]

    # log_model=True: the checkpoints are uploaded as `model` artifacts, holding the student only
    assert {a.type for a in run.artifacts} == {"model"}
    names = {json.loads(a.metadata)["original_filename"] for a in run.artifacts}
    assert names == {"best.ckpt", "last.ckpt"}
    for artifact in run.artifacts:
        (entry,) = artifact.manifest.contents
        state = torch.load(entry.local_path, map_location="cpu", weights_only=True)["state_dict"]
        assert any(k.startswith("student.") for k in state)
        assert not [k for k in state if k.startswith("teacher.")]


def test_cli_preset_plus_wandb_yaml_logs_to_csv_and_wandb(offline_wandb, monkeypatch):
    monkeypatch.chdir(offline_wandb)  # the preset's relative run folders land under tmp
    teacher = offline_wandb / "teacher.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), teacher)
    args = [
        "--config",
        str(REPO / "configs/demo/kd_ls.yaml"),
        "--config",
        str(WANDB_YAML),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.image_size=8",
        f"--model.init_args.teacher_weights={teacher}",
    ]
    main(["fit", *args])
    run = _finish_and_read(offline_wandb / "runs")
    assert run.config["loss.kd_weight"] == 9.0
    assert run.config["loss.standardize"] is True
    assert run.config["student"] == "resnet8"
    assert run.config["teacher"] == "resnet20"
    assert run.config["num_classes"] == 10
    assert run.config["optimizer.class_path"].endswith(".SGD")
    assert run.config["optimizer.lr"] == 0.05
    assert run.config["lr_scheduler.class_path"].endswith(".CosineAnnealingLR")
    # the data, trainer and seed settings too, and the run's config file in the offline run folder
    assert run.config["data.batch_size"] == 64
    assert run.config["trainer.max_epochs"] == 1
    assert run.config["seed_everything"] == 0
    (saved,) = (offline_wandb / "runs").rglob("offline-run-*/files/lightning-kd/config.yaml")
    assert yaml.safe_load(saved.read_text())["trainer"]["max_epochs"] == 1
    assert run.history_keys >= LOSS_TERMS | METRICS
    # `logger+` appended W&B: the preset's CSV logger is still first and wrote its run folder
    (config_yaml,) = (offline_wandb / "runs" / "demo" / "kd_ls").rglob("config.yaml")
    loggers = yaml.safe_load(config_yaml.read_text())["trainer"]["logger"]
    assert [lg["class_path"].rsplit(".", 1)[-1] for lg in loggers] == ["CSVLogger", "WandbLogger"]
    (metrics_csv,) = config_yaml.parent.glob("metrics.csv")
    assert "val/acc1" in metrics_csv.read_text().splitlines()[0]
