"""The `make demo` runner: reads the newest run's metrics and keeps every earlier run's record."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_kd.demo import markdown_table, read_accuracies, run_demo

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


def test_demo_reads_the_new_run_and_keeps_the_earlier_one(tmp_path):
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
