"""The rough edges a new user hit in the first hour, each through the real ``lightning-kd`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_kd.callbacks import read_predictions, read_status
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
STUDENT = str(REPO / "configs/demo/student.yaml")
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--data.init_args.image_size=16",
]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_kd", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny fit of the demo student through the console entry point (shared by the tests below)."""
    work = tmp_path_factory.mktemp("run")
    result = _cli(["fit", "--config", STUDENT, *TINY], work)
    assert result.returncode == 0, result.stderr[-2000:]
    return work


def test_fit_output_has_no_noise(trained_run):
    # a second fit in the same folder, to read its output
    result = _cli(["fit", "--config", STUDENT, *TINY], trained_run)
    out = result.stdout + result.stderr
    assert result.returncode == 0
    assert "LeafSpec" not in out
    assert "litlogger" not in out
    assert "FLOPs" not in out
    assert "v_num" not in out
    assert out.count("fit finished:") == 1
    run = trained_run / "runs/demo/student/version_1"
    assert read_status(run)["status"] == "finished"
    assert (trained_run / "runs/demo/student/latest").resolve() == run.resolve()


def test_predict_writes_one_row_per_sample_with_the_argmax(trained_run):
    ckpt = trained_run / "runs/demo/student/version_0/checkpoints/best.ckpt"
    status = main(["predict", "--config", STUDENT, "--data.init_args.image_size=16", "--ckpt_path", str(ckpt)])
    assert status == 0
    path = trained_run / "runs/demo/student/version_0/predict_0/predictions.csv"
    rows = read_predictions(path)
    data = DigitsDataModule(image_size=16)
    data.setup("predict")
    assert len(rows) == len(data.test_set)
    assert [r["index"] for r in rows] == list(range(len(rows)))
    model = create_model("resnet8", num_classes=10)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    inputs = torch.stack([data.test_set[i][0] for i in range(len(rows))])
    with torch.no_grad():
        logits = model(inputs)
    assert [r["prediction"] for r in rows] == logits.argmax(1).tolist()
    assert [r["target"] for r in rows] == [int(data.test_set[i][1]) for i in range(len(rows))]
    for row in rows:
        assert row["top5_classes"][0] == row["prediction"]
        assert len(row["top5_classes"]) == 5
        assert row["top5_probabilities"] == sorted(row["top5_probabilities"], reverse=True)


def test_evaluating_a_run_checkpoint_without_config_logs_beside_the_run(trained_run):
    ckpt = trained_run / "runs/demo/student/version_0/checkpoints/best.ckpt"
    result = _cli(
        ["test", "--data", "DigitsDataModule", "--data.init_args.image_size=16", "--ckpt_path", str(ckpt)],
        trained_run,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tests = sorted((trained_run / "runs/demo/student/version_0").glob("test_*/metrics.csv"))
    assert tests, "test logged elsewhere"
    assert not (trained_run / "lightning_logs").exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
@pytest.mark.parametrize("kind", ["missing", "truncated"])
def test_a_bad_ckpt_path_is_one_message_with_exit_code_2(subcommand, kind, tmp_path, trained_run, capsys):
    if kind == "missing":
        path = tmp_path / "nope.ckpt"
    else:
        good = (trained_run / "runs/demo/student/version_0/checkpoints/best.ckpt").read_bytes()
        path = tmp_path / "half.ckpt"
        path.write_bytes(good[: len(good) // 2])
    status = main([subcommand, "--config", STUDENT, "--ckpt_path", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert str(path.name) in err
    assert err.count("\n") <= 2
    assert "Traceback" not in err


def test_export_of_a_truncated_checkpoint_is_one_message(tmp_path, trained_run, capsys):
    good = (trained_run / "runs/demo/student/version_0/checkpoints/best.ckpt").read_bytes()
    path = tmp_path / "half.ckpt"
    path.write_bytes(good[: len(good) // 2])
    assert main(["export-student", str(path), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err
    assert "Traceback" not in err


def test_num_classes_disagreeing_with_the_data_is_an_error_naming_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(["fit", "--config", STUDENT, *TINY, "--model.init_args.num_classes=7"])
    err = capsys.readouterr().err
    assert status == 2
    assert "7" in err
    assert "10 classes" in err
    assert not (tmp_path / "runs/demo/student").exists() or not any((tmp_path / "runs/demo/student").iterdir())


def test_a_configuration_error_leaves_no_run_folder_and_a_crash_keeps_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # configuration error raised after the run folder was made (the teacher file is checked at fit start)
    status = main(
        ["fit", "--config", str(REPO / "configs/demo/kd.yaml"), *TINY, "--model.init_args.teacher_weights=no.pth"]
    )
    assert status == 2
    group = tmp_path / "runs/demo/kd"
    assert not group.exists() or not [p for p in group.iterdir() if p.name.startswith("version_")]
    # a crash during training: the folder, its config and logs stay, status says failed, latest is not set
    with pytest.raises(ZeroDivisionError):
        main(["fit", "--config", STUDENT, *TINY, "--trainer.callbacks+=tests.helpers.crash.CrashAtSecondBatch"])
    run = tmp_path / "runs/demo/student/version_0"
    assert (run / "config.yaml").is_file()
    status_record = read_status(run)
    assert status_record["status"] == "failed"
    assert "ZeroDivisionError" in status_record["error"]
    assert not (tmp_path / "runs/demo/student/latest").exists()
    capsys.readouterr()


def test_fit_help_starts_with_distillation(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    head = out[: out.index("--trainer")]
    for word in ("DistillationModule", "teacher_weights", "lightning_kd.losses", "configs/cifar100", "Example"):
        assert word in head


def test_model_help_does_not_list_all_of_torch_nn(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "DistillationModule"])
    out = capsys.readouterr().out
    assert "torch.nn.ReLU" not in out
    assert len(out.splitlines()) < 400


def test_abbreviated_flags_are_refused_with_the_full_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", STUDENT, "--trainer.max_epoch", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--trainer.max_epochs" in err
    assert not (tmp_path / "runs").exists()


def test_an_init_argument_typo_names_the_closest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/demo/kd.yaml"), "--model.init_args.loss.init_args.temprature=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean 'temperature'" in err
    assert len(err.splitlines()) <= 3


def test_a_yaml_error_names_its_file(tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  init_args:\n    student: resnet8\n   teacher: [\n")
    assert main(["fit", "--config", STUDENT, "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err
    assert "line" in err


def test_status_file_is_json(trained_run):
    record = json.loads((trained_run / "runs/demo/student/version_0/status.json").read_text())
    assert record["status"] == "finished"
