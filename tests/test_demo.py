"""The `make demo` runner: reads the newest run's metrics and keeps every earlier run's record."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_kd.apps.demo import (
    TEACHER_CHECKPOINT,
    main,
    markdown_table,
    publish_teacher,
    read_accuracies,
    run_demo,
)
from lightning_kd.callbacks.epoch_line import epoch_line

REPO = Path(__file__).resolve().parents[1]


def test_demo_table_reads_logged_metrics(tmp_path):
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("epoch,step,val/acc1,val/acc1_best,train/loss\n0,1,0.5,0.5,\n0,1,,,2.0\n1,3,0.25,0.5,\n")
    assert read_accuracies(csv_file) == (0.5, 0.25)
    table = markdown_table({"teacher": (0.995, 0.99), "kd": (0.5, 0.25)})
    assert table.splitlines() == [
        "| run | val top-1 best (%) | val top-1 last (%) |",
        "|---|---|---|",
        "| teacher | 99.50 | 99.00 |",
        "| kd | 50.00 | 25.00 |",
    ]
    (tmp_path / "empty.csv").write_text("epoch,step,train/loss\n0,1,2.0\n")
    with pytest.raises(ValueError, match="holds no val/acc1"):
        read_accuracies(tmp_path / "empty.csv")


def test_demo_reads_the_new_run_and_keeps_the_earlier_one(tmp_path, capfd):
    config = yaml.safe_load((REPO / "configs/demo/student.yaml").read_text())
    config["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=2)
    config["data"]["init_args"]["image_size"] = 16
    (tmp_path / "configs" / "demo").mkdir(parents=True)
    (tmp_path / "configs" / "demo" / "student.yaml").write_text(yaml.safe_dump(config))
    earlier = tmp_path / "runs" / "demo" / "student" / "version_0"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "best.ckpt").write_text("an earlier run")
    (earlier / "metrics.csv").write_text("epoch,step,val/acc1,val/acc1_best\n0,1,0.99,0.99\n")
    (tmp_path / "runs" / "demo" / "student" / "latest").symlink_to("version_0")

    best, last = run_demo(tmp_path, ("student",))["student"]
    assert (best, last) != (0.99, 0.99), "the earlier run's metrics must not be read"
    assert 0.0 <= last <= best <= 1.0
    assert (earlier / "checkpoints" / "best.ckpt").read_text() == "an earlier run"
    assert (tmp_path / "runs" / "demo" / "student" / "latest").resolve().name == "version_1"
    # the progress bar is off; one line per epoch shows progress instead
    assert "\nepoch 1/1: train/loss_epoch " in capfd.readouterr().out


def test_epoch_line_shows_the_logged_metrics_in_order():
    metrics = {"val/acc1": 0.975, "train/loss_epoch": 0.4123, "val/loss": 0.1, "other": 3.0}
    assert (
        epoch_line(2, 12, metrics, 4.06)
        == "epoch 3/12: train/loss_epoch 0.412, val/loss 0.100, val/acc1 97.50% (4.1 s)"
    )
    assert epoch_line(0, -1, {}, 0.0) == "epoch 1: no metrics logged (0.0 s)"


def test_demo_configs_show_progress_and_read_the_demo_teacher():
    for run in ("teacher", "student", "kd", "kd_ls"):
        config = yaml.safe_load((REPO / "configs" / "demo" / f"{run}.yaml").read_text())
        callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
        assert "lightning_kd.callbacks.EpochLine" in callbacks, run
        if run.startswith("kd"):
            assert config["model"]["init_args"]["teacher_weights"] == str(TEACHER_CHECKPOINT)


def test_only_the_demo_chooses_the_students_teacher(tmp_path):
    teacher = tmp_path / "runs" / "demo" / "teacher"
    for version in ("version_0", "version_1"):
        (teacher / version / "checkpoints").mkdir(parents=True)
        (teacher / version / "checkpoints" / "best.ckpt").write_text(f"teacher of {version}")
    link = publish_teacher(tmp_path, teacher / "version_0")
    assert link == tmp_path / TEACHER_CHECKPOINT
    # a later teacher fit (version_1, `latest`) does not move the link; only the next demo teacher does
    (teacher / "latest").symlink_to("version_1")
    assert link.read_text() == "teacher of version_0"
    assert not link.is_symlink() or not Path(link.readlink()).is_absolute()  # relative: the folder can move
    publish_teacher(tmp_path, teacher / "version_1")
    assert link.read_text() == "teacher of version_1"
    with pytest.raises(FileNotFoundError, match=r"version_2/checkpoints/best\.ckpt does not exist"):
        publish_teacher(tmp_path, teacher / "version_2")


def test_students_without_a_demo_teacher_stop_with_one_line(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--runs", "kd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / TEACHER_CHECKPOINT} does not exist: add 'teacher' to --runs")
    assert err.count("\n") == 1
