"""The ``lightning-kd`` command line, run in-process on the real parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd import DistillationModule
from lightning_kd.cli import KDLightningCLI, main
from lightning_kd.data import DigitsDataModule
from lightning_kd.demo import markdown_table, read_accuracies
from lightning_kd.losses import KD
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
_FAST = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]


def _tiny_overrides(tmp_path: Path, run: str) -> list[str]:
    return [
        *_FAST,
        "--trainer.limit_test_batches=2",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.callbacks.init_args.dirpath={tmp_path / run / 'checkpoints'}",
        f"--trainer.default_root_dir={tmp_path / run}",
        "--data.init_args.image_size=16",
    ]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A resnet20 teacher trained for 2 batches through the CLI (a ClassificationModule checkpoint)."""
    tmp = tmp_path_factory.mktemp("teacher")
    main(["fit", "--config", str(REPO / "configs/demo/teacher.yaml"), *_tiny_overrides(tmp, "teacher")])
    path = tmp / "teacher" / "checkpoints" / "best.ckpt"
    assert path.is_file()
    return path


def test_cli_fit_and_test_on_tiny_kd_ls_config(tmp_path, teacher_ckpt):
    overrides = [*_tiny_overrides(tmp_path, "kd_ls"), f"--model.init_args.teacher_weights={teacher_ckpt}"]
    main(["fit", "--config", str(REPO / "configs/demo/kd_ls.yaml"), *overrides])
    run_dir = tmp_path / "kd_ls"
    best, last = read_accuracies(run_dir / "metrics.csv")
    assert 0.0 <= last <= best <= 1.0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["init_args"]["loss"]["init_args"]["standardize"] is True

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]
    hparams = checkpoint["hyper_parameters"]
    assert hparams["loss"]["init_args"]["kd_weight"] == 9.0
    assert hparams["student"] == "resnet8"

    main(["test", "--config", str(REPO / "configs/demo/kd_ls.yaml"), *overrides, f"--ckpt_path={ckpt}"])
    # a CLI checkpoint rebuilds the whole module from its recorded config
    module = DistillationModule.load_from_checkpoint(ckpt, weights_only=True)
    assert isinstance(module.loss, KD)
    assert module.loss.standardize
    assert module.num_classes == 10
    teacher = create_model("resnet20", num_classes=10, weights=str(teacher_ckpt))
    assert torch.equal(module.teacher.fc.weight, teacher.fc.weight)


def test_num_classes_is_linked_from_the_data():
    cli = KDLightningCLI(
        args=["--config", str(REPO / "configs/demo/student.yaml")],
        model_class=None,
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    assert isinstance(cli.datamodule, DigitsDataModule)
    assert cli.model.num_classes == 10
    assert cli.model.model.num_classes == 10


def test_print_config_round_trips(tmp_path, capsys):
    config = REPO / "configs/demo/kd_ls.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    dumped = tmp_path / "printed.yaml"
    dumped.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(dumped), "--print_config"])
    assert capsys.readouterr().out == printed, "the printed config must load back to the same config"
    data = yaml.safe_load(printed)
    loss = data["model"]["init_args"]["loss"]
    assert loss == {
        "class_path": "lightning_kd.losses.KD",
        "init_args": {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "standardize": True},
    }


def test_python_dash_m_is_the_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert "{fit,validate,test,predict}" in out
    script = Path(sys.executable).parent / "lightning-kd"
    assert script.is_file()
    out2 = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out2.replace("lightning-kd", "__main__.py") == out.replace("python -m lightning_kd", "__main__.py")


def test_bad_loss_value_is_reported_by_the_cli(tmp_path):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1.0"):
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/demo/kd.yaml"),
                "--model.init_args.loss.init_args.temperature=-1",
                "--model.init_args.teacher_weights=null",
                *_tiny_overrides(tmp_path, "bad"),
            ]
        )


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


def test_cli_tests_a_checkpoint_written_from_python(tmp_path):
    """A module built in Python records flattened settings; `--ckpt_path` then takes only its state."""
    from lightning.pytorch import Trainer

    module = DistillationModule(
        "resnet8", "resnet20", KD(temperature=2.0, kd_weight=9.0, standardize=True), num_classes=10
    )
    trainer = Trainer(
        max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=DigitsDataModule(image_size=16))
    ckpt = tmp_path / "python.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["loss.kd_weight"] == 9.0
    # the checkpoint's student also loads as plain weights
    student = create_model("resnet8", num_classes=10, weights=str(ckpt))
    assert torch.equal(student.fc.weight, module.student.fc.weight)

    overrides = [*_tiny_overrides(tmp_path, "from_python"), "--model.init_args.teacher_weights=null"]
    cli = KDLightningCLI(
        model_class=None,
        args=["test", "--config", str(REPO / "configs/demo/kd_ls.yaml"), *overrides, f"--ckpt_path={ckpt}"],
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    assert torch.equal(cli.model.student.fc.weight, module.student.fc.weight)
    assert 0.0 <= cli.trainer.callback_metrics["test/acc1"] <= 1.0


def test_demo_run_starts_clean_and_reads_its_own_metrics(tmp_path):
    from lightning_kd.demo import run_demo

    config = yaml.safe_load((REPO / "configs/demo/student.yaml").read_text())
    config["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=2)
    config["data"]["init_args"]["image_size"] = 16
    (tmp_path / "configs" / "demo").mkdir(parents=True)
    (tmp_path / "configs" / "demo" / "student.yaml").write_text(yaml.safe_dump(config))
    stale_dir = tmp_path / "runs" / "demo" / "student" / "checkpoints"
    stale_dir.mkdir(parents=True)
    (stale_dir / "best.ckpt").write_text("stale")
    (stale_dir.parent / "metrics.csv").write_text("epoch,step,val/acc1,val/acc1_best\n0,1,0.99,0.99\n")

    results = run_demo(tmp_path, ("student",))
    best, last = results["student"]
    assert (best, last) != (0.99, 0.99), "the stale metrics must not be read"
    assert 0.0 <= last <= best <= 1.0
    assert (stale_dir / "best.ckpt").read_bytes() != b"stale"
    assert not (stale_dir / "best-v1.ckpt").exists()
