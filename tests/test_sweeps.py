"""The LS grid: the W&B sweep config drives the real CLI, and the plain loop runs on the digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd.apps.sweep import KD_WEIGHTS, TEMPERATURES, GridPoint, PointResult, grid, main, markdown_table
from lightning_kd.cli import KDLightningCLI
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
SWEEP_YAML = REPO / "configs" / "sweeps" / "ls_grid.yaml"
TEMPERATURE_KEY = "model.init_args.loss.init_args.temperature"
KD_WEIGHT_KEY = "model.init_args.loss.init_args.kd_weight"


def _sweep() -> dict:
    return yaml.safe_load(SWEEP_YAML.read_text())


def test_wandb_sweep_is_the_papers_grid_and_the_plain_loops_default():
    sweep = _sweep()
    assert sweep["method"] == "grid"
    assert sweep["metric"] == {"name": "val/acc1_best", "goal": "maximize"}
    assert sweep["parameters"][TEMPERATURE_KEY]["values"] == [2.0, 3.0] == list(TEMPERATURES)
    assert sweep["parameters"][KD_WEIGHT_KEY]["values"] == [3.0, 6.0, 9.0, 12.0, 15.0] == list(KD_WEIGHTS)
    assert len(grid(list(TEMPERATURES), list(KD_WEIGHTS))) == 10
    command = sweep["command"]
    assert command[:3] == ["${env}", "lightning-kd", "fit"]
    assert command[-1] == "${args}"
    for i, token in enumerate(command):
        if token == "--config":
            assert (REPO / command[i + 1]).is_file(), command[i + 1]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """Stand-in weights for the sweep preset's resnet32x4 teacher (CIFAR-100)."""
    path = tmp_path_factory.mktemp("teacher") / "resnet32x4.pth"
    torch.save(create_model("resnet32x4", num_classes=100).state_dict(), path)
    return path


def _agent_command(sweep: dict, values: dict[str, float]) -> list[str]:
    """The command line a W&B agent runs for one grid point (wandb's own expansion of the ${...} macros)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})["args"]
    expanded = {"${env}": ["/usr/bin/env"], "${args}": flags}
    return [part for token in sweep["command"] for part in expanded.get(token, [token])]


@pytest.mark.parametrize(("temperature", "kd_weight"), [(2.0, 3.0), (3.0, 15.0)])
def test_wandb_sweep_command_parses_through_the_cli(tmp_path, monkeypatch, teacher, temperature, kd_weight):
    pytest.importorskip("wandb")
    command = _agent_command(_sweep(), {TEMPERATURE_KEY: temperature, KD_WEIGHT_KEY: kd_weight})
    assert command[:3] == ["/usr/bin/env", "lightning-kd", "fit"]
    assert f"--{TEMPERATURE_KEY}={temperature}" in command
    # the preset's teacher file and data are not here: point them at local stand-ins
    stand_ins = [f"--model.init_args.teacher_weights={teacher}", f"--data.init_args.data_dir={tmp_path}"]
    monkeypatch.chdir(REPO)  # the agent runs from the repository root
    cli = KDLightningCLI(
        model_class=None, args=[*command[3:], *stand_ins], run=False, subclass_mode_model=True, subclass_mode_data=True
    )
    assert cli.model.loss.standardize is True
    assert cli.model.loss.temperature == temperature
    assert cli.model.loss.kd_weight == kd_weight
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger", "WandbLogger"]


def test_grid_rejects_bad_values():
    with pytest.raises(ValueError, match=r"Temperatures must be > 0, got 0.0"):
        grid([0.0], [9.0])
    with pytest.raises(ValueError, match=r"KD weights must be >= 0, got -1.0"):
        grid([2.0], [-1.0])
    with pytest.raises(ValueError, match="at least one temperature"):
        grid([], [9.0])


def test_markdown_table_marks_the_best_point():
    table = markdown_table(
        [
            PointResult(GridPoint(2.0, 9.0), 0.5, 0.4, "runs/a/version_0"),
            PointResult(GridPoint(3.0, 9.0), 0.75, 0.7, "runs/a/version_1"),
        ]
    )
    assert "| 3 | 9 | 75.00 **(best)** | 70.00 | runs/a/version_1 |" in table
    assert "| 2 | 9 | 50.00 | 40.00 | runs/a/version_0 |" in table


@pytest.fixture
def one_thread():
    """Tiny networks run as fast on one thread, and the test suite shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_plain_loop_runs_each_point_through_the_cli_on_the_digits(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)  # the preset's relative run folders land under tmp
    teacher_file = tmp_path / "teacher.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), teacher_file)
    out = tmp_path / "sweep"
    code = main(
        [
            "--config",
            str(REPO / "configs/demo/kd_ls.yaml"),
            "--temperatures",
            "2",
            "3",
            "--kd-weights",
            "6",
            "--out",
            str(out),
            "--",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--data.init_args.image_size=8",
            f"--model.init_args.teacher_weights={teacher_file}",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    runs = set()
    for point in (GridPoint(2.0, 6.0), GridPoint(3.0, 6.0)):
        result = json.loads((out / f"{point.name}.json").read_text())
        assert 0.0 <= result["last_val_acc1"] <= result["best_val_acc1"] <= 1.0
        assert result["epochs"] == 2
        run = Path(result["run_folder"])
        runs.add(run)
        # the point's settings reached the fit: its saved config holds them
        loss = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["loss"]["init_args"]
        assert (loss["temperature"], loss["kd_weight"], loss["standardize"]) == (point.temperature, 6.0, True)
        assert f"| {point.temperature:g} | 6 | {100 * result['best_val_acc1']:.2f}" in printed
    assert len(runs) == 2  # each point its own run folder
    assert (out / "results.md").read_text().strip() in printed
