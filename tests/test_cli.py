"""The ``lightning-kd`` command line, run in-process on the real parser (one subprocess checks the console script)."""

from __future__ import annotations

import csv
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from lightning_kd import DistillationModule
from lightning_kd.apps.cli_app import KDLightningCLI, run_cli
from lightning_kd.apps.model_from_checkpoint import model_config_from_record
from lightning_kd.callbacks import RunProgressBar
from lightning_kd.cli import DEBUG_ENV, TOOLS, TRAINER_SUBCOMMANDS, main, top_level_help
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
KD_LS = str(REPO / "configs/demo/kd_ls.yaml")
# one epoch of two batches on 16x16 digits; evaluation on two batches
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--data.init_args.image_size=16",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder: the configs' relative `runs/...` paths land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    """A resnet20 teacher for the digits as a plain state dict (trained weights are not needed here)."""
    path = tmp_path / "teacher" / "resnet20.pth"
    path.parent.mkdir()
    torch.save(create_model("resnet20", num_classes=10).state_dict(), path)
    return path


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_test_fit_keeps_every_record(workdir, teacher_file, capsys):
    """11.1: each fit its own version folder, `test` beside it, `latest` at the newest fit; nothing overwritten."""
    teacher = f"--model.init_args.teacher_weights={teacher_file}"
    assert main(["fit", "--config", KD_LS, *TINY, teacher]) == 0
    first = workdir / "runs/demo/kd_ls/version_0"
    out = capsys.readouterr().out
    assert "run folder runs/demo/kd_ls/version_0; checkpoints in runs/demo/kd_ls/version_0/checkpoints" in out
    summary = next(line for line in out.splitlines() if line.startswith("fit finished:"))
    assert "best val top-1 " in summary
    assert "%, last " in summary
    assert "wall time " in summary
    metrics_before = (first / "metrics.csv").read_bytes()
    config_before = (first / "config.yaml").read_bytes()
    assert os.readlink(workdir / "runs/demo/kd_ls/latest") == "version_0"

    ckpt = "runs/demo/kd_ls/latest/checkpoints/best.ckpt"
    assert main(["test", "--config", KD_LS, *TINY, teacher, f"--ckpt_path={ckpt}"]) == 0
    tested = first / "test_0"
    assert [row["test/acc1"] for row in _metrics(tested / "metrics.csv") if row.get("test/acc1")]
    assert (tested / "config.yaml").is_file()

    best_before = (first / "checkpoints/best.ckpt").read_bytes()

    # a second fit of the same config, with another seed and two epochs so that its checkpoints differ
    assert main(["fit", "--config", KD_LS, *TINY, teacher, "--trainer.max_epochs=2", "--seed_everything=1"]) == 0
    second = workdir / "runs/demo/kd_ls/version_1"
    assert os.readlink(workdir / "runs/demo/kd_ls/latest") == "version_1"
    assert (first / "metrics.csv").read_bytes() == metrics_before
    assert (first / "config.yaml").read_bytes() == config_before
    assert (first / "checkpoints/best.ckpt").read_bytes() == best_before
    assert any(row.get("val/acc1") for row in _metrics(first / "metrics.csv"))
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    bests = [torch.load(run / "checkpoints/best.ckpt", weights_only=True) for run in (first, second)]
    assert not torch.equal(bests[0]["state_dict"]["student.fc.weight"], bests[1]["state_dict"]["student.fc.weight"])
    assert bests[0]["global_step"] == 2
    assert len(_metrics(second / "metrics.csv")) > len(_metrics(first / "metrics.csv"))
    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2

    # a fixed logger version that already holds a run is refused before anything is written
    capsys.readouterr()
    assert main(["fit", "--config", KD_LS, *TINY, teacher, "--trainer.logger.init_args.version=version_0"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (first / "metrics.csv").read_bytes() == metrics_before


def test_checkpoint_tests_without_its_teacher_and_the_command_line_wins(workdir, teacher_file, capsys):
    """11.2: `test` of a distillation checkpoint needs no teacher file; given values override saved ones."""
    teacher = f"--model.init_args.teacher_weights={teacher_file}"
    assert main(["fit", "--config", KD_LS, *TINY, teacher, "--trainer.limit_val_batches=0"]) == 0
    ckpt = workdir / "runs/demo/kd_ls/version_0/checkpoints/last.ckpt"
    moved = teacher_file.rename(teacher_file.with_name("moved.pth"))

    # the config still names the old teacher path (now missing): the student alone is tested, with a notice
    with pytest.warns(PossibleUserWarning, match="does not exist"):
        assert main(["test", "--config", KD_LS, *TINY, teacher, f"--ckpt_path={ckpt}"]) == 0
    rows = _metrics(ckpt.parent.parent / "test_0/metrics.csv")
    assert [row for row in rows if row.get("test/acc1")]
    assert not [key for key in rows[0] if key.startswith("teacher/")]

    # values on the command line beat the checkpoint's record: a new teacher path and another KD weight
    cli = KDLightningCLI(
        None,
        args=[
            "--config",
            KD_LS,
            *TINY,
            f"--model.init_args.teacher_weights={moved}",
            "--model.init_args.loss.init_args.kd_weight=3.0",
        ],
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    assert cli.model.teacher_available
    assert torch.equal(cli.model.teacher.fc.weight, torch.load(moved, weights_only=True)["fc.weight"])
    cli = run_cli(
        [
            "test",
            "--config",
            KD_LS,
            *TINY,
            f"--model.init_args.teacher_weights={moved}",
            "--model.init_args.loss.init_args.kd_weight=3.0",
            f"--ckpt_path={ckpt}",
        ]
    )
    assert cli.model.teacher_available
    assert cli.model.loss.kd_weight == 3.0, "the checkpoint's kd_weight=9 must not replace the command line's"
    assert cli.model.hparams["teacher_weights"] == str(moved.resolve())
    assert torch.equal(cli.model.teacher.fc.weight, torch.load(moved, weights_only=True)["fc.weight"])
    assert "test/acc1" in cli.trainer.callback_metrics

    # no model configured at all: the model is rebuilt from the checkpoint's record (the teacher file is missing)
    data = ["--data=DigitsDataModule", "--data.init_args.image_size=16", "--trainer.limit_test_batches=1"]
    with pytest.warns(PossibleUserWarning, match="does not exist"):
        cli = run_cli(["test", *data, "--trainer.logger=false", f"--ckpt_path={ckpt}"])
    assert isinstance(cli.model, DistillationModule)
    assert (cli.model.loss.kd_weight, cli.model.loss.standardize) == (9.0, True)
    assert not cli.model.teacher_available
    assert "test/acc1" in cli.trainer.callback_metrics


def test_a_record_of_networks_given_as_modules_needs_a_model_config():
    record = {"student_class": "my.Net", "teacher_class": "my.Big", "loss.class_path": "lightning_kd.losses.KD"}
    with pytest.raises(ValueError, match=r"given as modules \(student_class, teacher_class\).*--config"):
        model_config_from_record(record, "x.ckpt")
    config = model_config_from_record(
        {"model": "resnet8", "num_classes": 10, "optimizer.class_path": "torch.optim.SGD", "optimizer.lr": 0.1}
    )
    assert config == {
        "class_path": "lightning_kd.ClassificationModule",
        "init_args": {"model": "resnet8", "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}},
    }


def test_lightning_still_merges_checkpoint_settings_through_the_overridden_method():
    """The one private Lightning API we override: fail loudly when an upgrade renames or stops calling it."""
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__), (
        "LightningCLI no longer calls _parse_ckpt_path: check how it merges checkpoint hyperparameters now and "
        "move the override in lightning_kd/apps/cli_app.py accordingly."
    )
    assert "hyper_parameters" in inspect.getsource(LightningCLI._parse_ckpt_path)
    assert KDLightningCLI._parse_ckpt_path is not LightningCLI._parse_ckpt_path


def test_top_level_optimizer_is_routed_to_the_trainable_parameters(workdir, teacher_file):
    """11.4: --optimizer reaches the module's optimizer (student + loss parameters); the config's scheduler stays."""
    cli = run_cli(
        [
            "fit",
            "--config",
            KD_LS,
            *TINY,
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=0",
            f"--model.init_args.teacher_weights={teacher_file}",
            "--optimizer=Adam",
            "--optimizer.lr=0.01",
        ]
    )
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["initial_lr"] == 0.01
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in [*cli.model.student.parameters(), *cli.model.loss.parameters()]}
    assert in_optimizer == trainable
    assert not in_optimizer & {id(p) for p in cli.model.teacher.parameters()}
    schedulers = [config.scheduler for config in cli.trainer.lr_scheduler_configs]
    assert [type(s).__name__ for s in schedulers] == ["CosineAnnealingLR"]
    saved = yaml.safe_load((workdir / "runs/demo/kd_ls/version_0/config.yaml").read_text())
    assert saved["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.Adam"
    assert saved["optimizer"] is None


def test_top_level_lr_scheduler_replaces_the_configured_one():
    cli = KDLightningCLI(
        None,
        args=[
            "--config",
            KD_LS,
            "--model.init_args.teacher_weights=null",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=3",
        ],
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    configured = cli.model.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert isinstance(configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert configured["lr_scheduler"]["scheduler"].step_size == 3


@pytest.mark.parametrize(("enabled", "expected"), [(True, RunProgressBar), (False, type(None))])
def test_rich_progress_bar_unless_the_config_disables_it(enabled, expected):
    cli = KDLightningCLI(
        None,
        args=["--config", str(REPO / "configs/demo/student.yaml"), f"--trainer.enable_progress_bar={enabled}"],
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    assert type(cli.trainer.progress_bar_callback) is expected
    assert not enabled or isinstance(cli.trainer.progress_bar_callback, RichProgressBar)


def test_num_classes_is_linked_from_the_data():
    cli = KDLightningCLI(
        None,
        args=["--config", str(REPO / "configs/demo/student.yaml")],
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )
    assert isinstance(cli.datamodule, DigitsDataModule)
    assert cli.model.num_classes == 10
    assert cli.model.model.num_classes == 10


def test_print_config_round_trips(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", KD_LS, "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    dumped = tmp_path / "printed.yaml"
    dumped.write_text(printed)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(dumped), "--print_config"])
    assert capsys.readouterr().out == printed, "the printed config must load back to the same config"
    loss = yaml.safe_load(printed)["model"]["init_args"]["loss"]
    assert loss == {
        "class_path": "lightning_kd.losses.KD",
        "init_args": {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0, "standardize": True},
    }


def test_help_says_what_the_tool_does(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text == top_level_help() + "\n"
    assert "knowledge distillation" in text
    for name in (*TRAINER_SUBCOMMANDS, *TOOLS):
        assert f"\n  {name} " in text, name
    assert set(TRAINER_SUBCOMMANDS) == set(LightningCLI.subcommands()), "the help must list Lightning's subcommands"
    assert "example:\n  lightning-kd fit --config configs/demo/" in text
    assert "--ckpt_path" in text
    assert "later flags win" in text  # the precedence


def test_subcommand_help_states_the_precedence(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "never settings" in text
    assert "needs no teacher file" in text


BAD_TEMPERATURE = [
    "fit",
    "--config",
    str(REPO / "configs/demo/kd.yaml"),
    "--model.init_args.loss.init_args.temperature=-1",
    "--model.init_args.teacher_weights=null",
]


def test_project_error_is_one_message_with_exit_code_2(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert main(BAD_TEMPERATURE) == 2
    err = capsys.readouterr().err
    assert "lightning-kd: error: temperature must be > 0, got -1.0" in err
    assert "Traceback" not in err
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1.0"):
        main([*BAD_TEMPERATURE, "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1.0"):
        main(BAD_TEMPERATURE)


def test_project_error_wrapped_by_a_union_type_is_dug_out(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    bad_teacher = (
        "--model.init_args.teacher={'class_path': 'lightning_kd.models.cifar.wrn.WideResNet', "
        "'init_args': {'depth': 5, 'widen_factor': 1, 'num_classes': 10}}"
    )
    assert main([*BAD_TEMPERATURE[:3], "--model.init_args.teacher_weights=null", bad_teacher]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "lightning-kd: error: WideResNet depth must be 6n + 4 with n >= 1, got depth=5."
    assert "Union subtypes" not in err


def test_console_script_exits_2_with_one_line_on_a_project_error():
    script = Path(sys.executable).parent / "lightning-kd"
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    result = subprocess.run([str(script), *BAD_TEMPERATURE], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "lightning-kd: error: temperature must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
    main_source = (REPO / "lightning_kd/__main__.py").read_text()
    assert "raise SystemExit(main())" in main_source, "python -m lightning_kd must be the same entry point"


def test_summarize_is_dispatched_to_its_tool(capsys):
    try:
        from lightning_kd.apps import summarize
    except ImportError as err:  # written by another change; fail clearly rather than skip
        pytest.fail(f"`lightning-kd summarize` needs lightning_kd/apps/summarize.py with main(argv) -> int: {err}")
    assert callable(summarize.main)
    with pytest.raises(SystemExit) as exit_info:
        main(["summarize", "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_cli_tests_a_checkpoint_written_from_python(workdir):
    """A module built in Python and saved by a plain Trainer is tested through the CLI (its state only)."""
    from lightning.pytorch import Trainer

    module = DistillationModule(
        "resnet8", "resnet20", KD(temperature=2.0, kd_weight=9.0, standardize=True), num_classes=10
    )
    trainer = Trainer(
        max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=DigitsDataModule(image_size=16))
    ckpt = workdir / "python.ckpt"
    trainer.save_checkpoint(ckpt)
    cli = run_cli(["test", "--config", KD_LS, *TINY, "--model.init_args.teacher_weights=null", f"--ckpt_path={ckpt}"])
    assert torch.equal(cli.model.student.fc.weight, module.student.fc.weight)
    assert 0.0 <= cli.trainer.callback_metrics["test/acc1"] <= 1.0
    # outside a run folder, `test` logs into a new version folder of its own
    assert sorted(p.name for p in (workdir / "runs/demo/kd_ls").iterdir()) == ["version_0"]
