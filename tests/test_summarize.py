"""The multi-seed summary (lightning_kd.apps.summarize) and the GPU reproduction script (benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd.apps import summarize
from lightning_kd.apps.paper_results import CIFAR_METHODS, CIFAR_PAIRS, PAPER_TOP1, VIT_METHODS, VIT_STUDENTS
from lightning_kd.cli import main as cli_main
from lightning_kd.models import create_model

REPO = Path(__file__).resolve().parents[1]
HEADER = "epoch,lr-SGD,step,train/acc1,train/loss_epoch,val/acc1,val/acc1_best,val/acc5,val/loss"


def write_run(
    folder: Path,
    accs: list[float],
    *,
    seed: int | None = 0,
    loss: str = "KD",
    standardize: bool = True,
    teacher: str = "resnet32x4",
    student: str = "resnet8x4",
    max_epochs: int | None = None,
    data: str = "lightning_kd.data.CIFAR100DataModule",
) -> Path:
    """A run folder as the CLI writes it: metrics.csv in the CSV logger's layout (train and val rows interleaved,
    sorted header) and config.yaml (with ``seed=None``: no config at all)."""
    folder.mkdir(parents=True)
    rows = [HEADER]
    for epoch, acc in enumerate(accs):
        step = 781 * (epoch + 1) - 1
        rows.append(f"{epoch},,{step},0.5,1.5,{acc},{acc},0.9,1.2")  # the validation row
        rows.append(f"{epoch},0.05,{step},,,,,,")  # the learning-rate monitor's row
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    if seed is not None:
        config = {
            "seed_everything": seed,
            "trainer": {"max_epochs": max_epochs or len(accs)},
            "model": {
                "class_path": "lightning_kd.DistillationModule",
                "init_args": {
                    "student": student,
                    "teacher": teacher,
                    "loss": {"class_path": f"lightning_kd.losses.{loss}", "init_args": {"standardize": standardize}},
                },
            },
            "data": {"class_path": data, "init_args": {"data_dir": "data"}},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_two_seeds_give_mean_and_sample_std_beside_the_paper(tmp_path, capsys):
    group = tmp_path / "runs" / "cifar100" / "kd_ls" / "resnet32x4_resnet8x4"
    write_run(group / "version_0", [0.50, 0.7662, 0.70], seed=0)
    write_run(group / "version_1", [0.60, 0.7700, 0.7650], seed=1)

    assert summarize.main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    # best: 76.62, 77.00 -> mean 76.81, std |a - b| / sqrt(2) = 0.2687; last: 70.00, 76.50 -> 73.25 ± 4.596
    row = "| cifar100/kd_ls/resnet32x4_resnet8x4 | 2 | 0, 1 | 3 | 76.81 ± 0.27 | 73.25 ± 4.60 | 76.62 | +0.19 |"
    assert row in out.splitlines()
    assert out.splitlines()[0] == (
        "| preset | n | seeds | epochs | best top-1 (%) | last top-1 (%) | paper (%) | best − paper |"
    )
    assert "sample std (n − 1)" in out


def test_presets_are_grouped_and_ordered_as_the_paper_table(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "kd" / "vgg13_vgg8" / "version_0", [0.70], standardize=False, teacher="vgg13", student="vgg8")
    write_run(runs / "dkd" / "resnet32x4_resnet8x4" / "version_0", [0.76], loss="DKD", standardize=False)
    write_run(runs / "x" / "version_0", [0.75], seed=3, loss="CTKD")
    write_run(runs / "x" / "version_1", [0.77], seed=4, loss="CTKD")
    summaries, problems = summarize.summarize([str(runs)])
    assert problems == []
    assert [s.preset for s in summaries] == [
        "cifar100/ctkd_ls/resnet32x4_resnet8x4",  # the same pair, in the paper's column order
        "cifar100/dkd/resnet32x4_resnet8x4",
        "cifar100/kd/vgg13_vgg8",
    ]
    ctkd = summaries[0]
    assert ctkd.n == 2
    assert [run.seed for run in ctkd.runs] == [3, 4]
    assert ctkd.paper == PAPER_TOP1["cifar100/ctkd_ls/resnet32x4_resnet8x4"]
    assert ctkd.paper.top1 == 76.67


def test_a_latest_link_does_not_count_a_run_twice(tmp_path):
    group = tmp_path / "runs" / "cifar100" / "kd" / "vgg13_vgg8"
    write_run(group / "version_0", [0.7], standardize=False, teacher="vgg13", student="vgg8")
    (group / "latest").symlink_to(group / "version_0", target_is_directory=True)
    summaries, _ = summarize.summarize([str(tmp_path / "runs"), str(group / "latest")])
    assert [(s.preset, s.n) for s in summaries] == [("cifar100/kd/vgg13_vgg8", 1)]


def test_preset_from_folder_names_without_config(tmp_path):
    group = tmp_path / "runs" / "cifar100" / "mlkd" / "wrn_40_2_wrn_16_2"
    write_run(group / "seed_0", [0.7663], seed=None)
    table = summarize.format_markdown(*summarize.summarize([str(group / "seed_0")]))
    assert "| cifar100/mlkd/wrn_40_2_wrn_16_2 | 1 | ? | 1 | 76.63 | 76.63 | 76.63 | +0.00 |" in table


def test_imagenet_and_unfinished_runs_are_marked(tmp_path):
    folder = tmp_path / "imagenet" / "r34_r18" / "kd_ls" / "version_0"
    write_run(
        folder,
        [0.70, 0.71],
        teacher="torchvision/resnet34",
        student="torchvision/resnet18",
        max_epochs=100,
        data="lightning_kd.data.ImageNetDataModule",
    )
    table = summarize.format_markdown(*summarize.summarize([str(tmp_path / "imagenet" / "**" / "version_*")]))
    assert (
        "| imagenet/r34_r18/kd_ls (unfinished) | 1 | 0 | 2 (1 unfinished) | 71.00 | 71.00 | 71.42* | -0.42 |" in table
    )
    assert "not checked against the paper's PDF" in table
    assert "Unfinished runs" in table


def test_runs_without_metrics_are_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert summarize.main([str(tmp_path / "empty")]) == 1
    assert "No metrics.csv nor fidelity record (*__seed*.json) found under" in capsys.readouterr().err
    assert summarize.main([str(tmp_path / "nothing_here")]) == 1
    assert "No file or folder matches" in capsys.readouterr().err

    # a run that has not validated yet: named, and the only run, so nothing to summarize
    folder = tmp_path / "early" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,train/loss_step\n0,49,4.1\n")
    assert summarize.main([str(tmp_path / "early")]) == 1
    err = capsys.readouterr().err
    assert "has no 'val/acc1' column" in err
    assert str(folder / "metrics.csv") in err


def test_a_bad_run_is_left_out_by_name_beside_good_ones(tmp_path):
    write_run(tmp_path / "a" / "version_0", [0.7])
    write_run(tmp_path / "b" / "version_0", [70.0])  # percent instead of a fraction
    summaries, problems = summarize.summarize([str(tmp_path)])
    assert len(summaries) == 1
    assert len(problems) == 1
    assert "outside [0, 1]" in problems[0]
    assert "Runs left out:" in summarize.format_markdown(summaries, problems)


def test_output_file_and_module_entry_point(tmp_path):
    write_run(tmp_path / "runs" / "g" / "version_0", [0.72, 0.73])
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kd.apps.summarize", str(tmp_path / "runs"), "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout
    assert "| 73.00 | 73.00 | 76.62 | -3.62 |" in result.stdout


def test_paper_table_covers_every_cifar_preset():
    for method in CIFAR_METHODS:
        for pair in CIFAR_PAIRS:
            assert (REPO / "configs" / "cifar100" / method / f"{pair}.yaml").is_file()
            assert f"cifar100/{method}/{pair}" in PAPER_TOP1
    for pair in ("r34_r18", "r50_mv1"):
        for method in ("kd", "kd_ls", "dkd", "dkd_ls"):
            assert f"imagenet/{pair}/{method}" in PAPER_TOP1


# The ViT table, typed from the official tiny-transformers README: Base / ECCV2022 (locality guidance) / KD+Ours.
VIT_PAPER = {
    "deit_tiny": (65.08, 78.15, 78.55),
    "t2t_vit_7": (69.37, 78.35, 78.43),
    "pit_tiny": (73.58, 78.48, 78.76),
    "pvt_tiny": (69.22, 77.07, 78.43),
}


def test_paper_table_has_the_vit_table_keyed_by_preset_path():
    assert tuple(VIT_PAPER) == VIT_STUDENTS
    assert VIT_METHODS == ("base", "lg", "kd_ls")
    vit_keys = {key for key in PAPER_TOP1 if key.startswith("cifar100/vit/")}
    assert vit_keys == {f"cifar100/vit/{s}_{m}" for s in VIT_PAPER for m in VIT_METHODS}
    for student, row in VIT_PAPER.items():
        for method, top1 in zip(VIT_METHODS, row, strict=True):
            key = f"cifar100/vit/{student}_{method}"
            assert (REPO / "configs" / f"{key}.yaml").is_file()
            assert PAPER_TOP1[key].top1 == top1
            assert "tiny-transformers README" in PAPER_TOP1[key].source


def test_vit_runs_are_named_by_their_presets_from_config_and_from_folders(tmp_path, capsys):
    """Runs whose config.yaml is a shipped ViT preset land on that preset's row and paper number; without a config,
    the folder names (runs/cifar100/vit/<preset>/version_N) say the same."""
    runs = tmp_path / "runs" / "cifar100" / "vit"
    presets = sorted((REPO / "configs" / "cifar100" / "vit").glob("*.yaml"))
    for index, path in enumerate(presets):
        run = write_run(runs / path.stem / "version_0", [0.6, 0.7 + index / 1000], seed=None)
        (run / "config.yaml").write_text(path.read_text())  # seed 0, the preset's every setting
    write_run(tmp_path / "copies" / "cifar100" / "vit" / "pit_tiny_lg" / "seed_1", [0.7848], seed=None)
    summaries, problems = summarize.summarize([str(tmp_path / "runs"), str(tmp_path / "copies")])
    assert problems == []
    by_preset = {(s.preset, s.group.parent.parent.parent.name): s for s in summaries}
    assert {preset for preset, _ in by_preset} == {f"cifar100/vit/{p.stem}" for p in presets}
    for student, row in VIT_PAPER.items():
        for method, top1 in zip(VIT_METHODS, row, strict=True):
            assert by_preset[(f"cifar100/vit/{student}_{method}", "runs")].paper.top1 == top1
    assert by_preset[("cifar100/vit/resnet56_pycls", "runs")].paper is None  # the README reports no teacher
    assert by_preset[("cifar100/vit/pit_tiny_lg", "copies")].paper.top1 == 78.48  # from the folder names
    table = summarize.format_markdown(summaries, problems)
    # deit_tiny_kd_ls is the second preset by name: best = last = 70.1, 2 of the preset's 300 epochs
    row = "| cifar100/vit/deit_tiny_kd_ls (unfinished) | 1 | 0 | 2 (1 unfinished) | 70.10 | 70.10 | 78.55 | -8.45 |"
    assert row in table.splitlines()


def test_vit_recipes_outside_the_table_get_their_own_ids():
    def preset(student, loss, feature_loss=None):
        init = {"student": student, "teacher": "resnet56_pycls", "loss": loss, "feature_loss": feature_loss}
        config = {"model": {"init_args": init}, "data": {"class_path": "lightning_kd.data.CIFAR100DataModule"}}
        return summarize._preset_from_config(config)

    kd = {"class_path": "lightning_kd.losses.KD", "init_args": {"kd_weight": 9.0, "standardize": False}}
    guidance = {"class_path": "lightning_kd.losses.LocalityGuidance"}
    assert preset("pit_tiny", kd) == "cifar100/vit/pit_tiny_kd"
    assert preset("pit_tiny_distilled", kd, guidance) == "cifar100/vit/pit_tiny_kd_lg"
    # a CIFAR zoo pair is unaffected
    zoo = {"student": "resnet8x4", "teacher": "resnet32x4", "loss": kd}
    config = {"model": {"init_args": zoo}, "data": {"class_path": "lightning_kd.data.CIFAR100DataModule"}}
    assert summarize._preset_from_config(config) == "cifar100/kd/resnet32x4_resnet8x4"


def test_summary_of_a_real_cli_run(tmp_path, monkeypatch, capsys):
    """What the CLI really writes (config.yaml, metrics.csv) is what the summary reads."""
    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": create_model("resnet20", num_classes=10).state_dict()}, teacher)
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "demo" / "kd_ls.yaml"),
        "--seed_everything",
        "3",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.logger.init_args.save_dir",
        "runs/demo",
        f"--model.init_args.teacher_weights={teacher}",
    ]
    cli_main(args)
    capsys.readouterr()
    assert summarize.main(["runs/demo"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits/kd_ls/"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "digits/kd_ls/resnet20_resnet8"
    assert cells[1:4] == ["1", "3", "2"]  # n, seed, epochs
    metrics = next(Path("runs/demo").rglob("metrics.csv"))
    logged = [float(v) for v in _column(metrics, "val/acc1")]
    assert cells[4] == f"{100 * max(logged):.2f}"
    assert cells[5] == f"{100 * logged[-1]:.2f}"
    assert cells[6] == "—"  # no paper number for the demo


def _column(path: Path, name: str) -> list[str]:
    import csv

    with path.open(newline="") as file:
        return [row[name] for row in csv.DictReader(file) if row.get(name)]


# ----------------------------------------------------------------------------------------------------------------
# benchmarks/reproduce_cifar.py
# ----------------------------------------------------------------------------------------------------------------


def _reproduce_module():
    spec = importlib.util.spec_from_file_location("reproduce_cifar", REPO / "benchmarks" / "reproduce_cifar.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduce():
    return _reproduce_module()


def test_dry_run_lists_every_run_of_the_table(reproduce, tmp_path, capsys):
    teachers = tmp_path / "cifar_teachers"
    for teacher in ("resnet32x4", "vgg13", "wrn_40_2", "resnet56", "resnet110", "ResNet50"):
        (teachers / f"{teacher}_vanilla").mkdir(parents=True)
        (teachers / f"{teacher}_vanilla" / "ckpt_epoch_240.pth").write_bytes(b"")
    out = tmp_path / "out"
    code = reproduce.main(["--teachers-dir", str(teachers), "--output", str(out), "--dry-run", "--gpus", "0", "1"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line.split() for line in lines if " -m lightning_kd fit " in line]
    assert len(commands) == 8 * 14 * 4  # every preset, 4 seeds as the paper
    assert not any("note:" in line for line in lines)  # every teacher file is there
    assert "448 distillation runs (0 already finished)" in lines[0]
    assert "GPU-hours" in lines[0]
    assert "queued over GPUs 0, 1" in lines[1]

    def option(command: list[str], name: str) -> str:
        return command[command.index(name) + 1]

    seen = set()
    for command in commands:
        config = Path(option(command, "--config"))
        method, pair, seed = config.parent.name, config.stem, option(command, "--seed_everything")
        seen.add((method, pair, seed))
        assert config == REPO / "configs" / "cifar100" / method / f"{pair}.yaml"
        assert option(command, "--trainer.devices") == "1"
        assert option(command, "--trainer.logger.init_args.save_dir") == str(out / "cifar100" / method)
        assert option(command, "--trainer.logger.init_args.name") == pair
        assert option(command, "--trainer.logger.init_args.version") == f"seed_{seed}"
        teacher = yaml.safe_load(config.read_text())["model"]["init_args"]["teacher"]
        expected = teachers / f"{teacher}_vanilla" / "ckpt_epoch_240.pth"
        assert option(command, "--model.init_args.teacher_weights") == str(expected)
    assert seen == {(m, p, str(s)) for m in CIFAR_METHODS for p in CIFAR_PAIRS for s in range(4)}


def test_dry_run_subset_with_teacher_training_and_fit_arguments(reproduce, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--train-teachers", "--methods", "kd", "mlkd_ls", "--pairs", "resnet32x4_resnet8x4", "--seeds", "5"]
    code = reproduce.main([*argv, "--output", str(out), "--dry-run", "--fast", "--", "--trainer.precision", "fp32"])
    assert code == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if " -m lightning_kd fit " in line]
    assert len(commands) == 3
    fast = f"--config {REPO / 'configs' / 'cifar100' / 'fast.yaml'}"
    assert f"kd/resnet32x4_resnet8x4.yaml {fast} --seed_everything 5" in commands[1]
    assert fast not in commands[2]  # not for MLKD: its two views need the PIL pipeline
    assert "configs/cifar100/teachers/resnet32x4.yaml" in commands[0]  # the teacher is trained first
    last = out / "cifar100" / "teachers" / "resnet32x4" / "seed_0" / "checkpoints" / "last.ckpt"
    for command in commands[1:]:
        assert f"--model.init_args.teacher_weights {last}" in command
        assert "--seed_everything 5" in command
    assert all(command.endswith("--trainer.precision fp32") for command in commands)


def test_missing_teacher_files_stop_a_real_run(reproduce, tmp_path, capsys):
    code = reproduce.main(["--teachers-dir", str(tmp_path), "--pairs", "vgg13_vgg8", "--gpus", "0"])
    assert code == 2
    captured = capsys.readouterr()
    assert f"missing teacher file {tmp_path / 'vgg13_vanilla' / 'ckpt_epoch_240.pth'}" in captured.out
    assert "cifar_teachers.tar" in captured.err


FAKE_FIT = textwrap.dedent(
    """
    import sys, json, os
    from pathlib import Path
    import yaml
    args = sys.argv[sys.argv.index("fit") + 1:]
    get = lambda name: args[args.index(name) + 1]
    run = Path(get("--trainer.logger.init_args.save_dir")) / get("--trainer.logger.init_args.name")
    run = run / get("--trainer.logger.init_args.version")
    seed = int(get("--seed_everything"))
    if os.environ.get("FAIL_SEED") == str(seed):
        sys.exit(3)
    if "--model.init_args.teacher_weights" in args and not Path(get("--model.init_args.teacher_weights")).is_file():
        sys.exit(4)  # a distillation run started before its teacher exists
    run.mkdir(parents=True)
    if "teachers" in get("--config"):  # a teacher run leaves its last checkpoint
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    config = yaml.safe_load(Path(get("--config")).read_text())
    config["seed_everything"], config["trainer"]["max_epochs"] = seed, 2
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    acc = 0.7 + seed / 100
    (run / "metrics.csv").write_text(f"epoch,step,val/acc1\\n0,1,{acc - 0.01}\\n1,3,{acc}\\n")
    Path(os.environ["CALLS"]).open("a").write(json.dumps([str(run), os.environ["CUDA_VISIBLE_DEVICES"]]) + "\\n")
    """
)


def test_runs_are_queued_over_gpus_resumed_and_summarized(reproduce, tmp_path, monkeypatch):
    """The real (non-dry) path with a stand-in for `python -m lightning_kd fit` that writes a run folder."""
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_FIT}")
    fake.chmod(0o755)
    teachers = tmp_path / "teachers" / "resnet32x4_vanilla"
    teachers.mkdir(parents=True)
    (teachers / "ckpt_epoch_240.pth").write_bytes(b"")
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)  # present: no download
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("FAIL_SEED", "2")
    out = tmp_path / "out"
    argv = ["--teachers-dir", str(tmp_path / "teachers"), "--methods", "kd_ls", "--pairs", "resnet32x4_resnet8x4"]
    argv += ["--seeds", "0", "1", "2", "--gpus", "3", "5", "--output", str(out), "--data-dir", str(tmp_path / "data")]
    argv += ["--python", str(fake)]

    assert reproduce.main(argv) == 1  # seed 2 failed
    first = [json.loads(line) for line in calls.read_text().splitlines()]
    assert {gpu for _, gpu in first} <= {"3", "5"}
    assert len(first) == 2
    group = out / "cifar100" / "kd_ls" / "resnet32x4_resnet8x4"
    assert json.loads((group / "seed_0" / "reproduce.json").read_text())["seed"] == 0
    assert not (group / "seed_2" / "reproduce.json").exists()
    summary = (out / "cifar100_summary.md").read_text()
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 | 2 | 0, 1 | 2 | 70.50 ± 0.71 | 70.50 ± 0.71 | 76.62 |" in summary
    assert (group / "seed_2.log").is_file()

    # started again: the finished runs are skipped, the failed one reruns (now succeeding) and joins the summary
    (group / "seed_2").mkdir()  # leftovers of the failed attempt are moved aside, never deleted
    monkeypatch.setenv("FAIL_SEED", "none")
    assert reproduce.main(argv) == 0
    second = [json.loads(line) for line in calls.read_text().splitlines()][len(first) :]
    assert [Path(run).name for run, _ in second] == ["seed_2"]
    assert (group / "seed_2.incomplete-1").is_dir()
    summary = (out / "cifar100_summary.md").read_text()
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 | 3 | 0, 1, 2 | 2 | 71.00 ± 1.00 | 71.00 ± 1.00 | 76.62 |" in summary


def test_teachers_are_trained_before_the_runs_that_need_them(reproduce, tmp_path, monkeypatch):
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_FIT}")
    fake.chmod(0o755)
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.jsonl"))
    out = tmp_path / "out"
    argv = ["--train-teachers", "--methods", "kd", "dkd_ls", "--pairs", "vgg13_vgg8", "vgg13_MobileNetV2"]
    argv += ["--seeds", "0", "--gpus", "0", "1", "--output", str(out), "--data-dir", str(tmp_path / "data")]
    assert reproduce.main([*argv, "--python", str(fake)]) == 0
    runs = [Path(json.loads(line)[0]) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert runs[0] == out / "cifar100" / "teachers" / "vgg13" / "seed_0"  # one teacher run, first
    assert len(runs) == 1 + 2 * 2
    summary = (out / "cifar100_summary.md").read_text()
    assert "| cifar100/vanilla/vgg13 | 1 | 0 | 2 | 70.00 | 70.00 | 74.64 | -4.64 |" in summary
    assert "cifar100/dkd_ls/vgg13_MobileNetV2" in summary


# ----------------------------------------------------------------------------------------------------------------
# sub-runs, recipes and failed runs are never pooled
# ----------------------------------------------------------------------------------------------------------------


def _stage_folder(run: Path, stage: str, acc: float) -> None:
    """``<run>/<stage>`` as `validate` / `test --ckpt_path <run>/checkpoints/...` writes it."""
    sub = run / stage
    sub.mkdir()
    (sub / "config.yaml").write_text((run / "config.yaml").read_text())
    (sub / "hparams.yaml").write_text("{}\n")
    metric = "val" if stage.startswith("validate") else "test"
    (sub / "metrics.csv").write_text(f"epoch,step,{metric}/acc1,{metric}/loss\n0,0,{acc},1.0\n")


def test_sub_runs_are_neither_presets_nor_runs(tmp_path):
    group = tmp_path / "runs" / "cifar100" / "kd_ls" / "resnet32x4_resnet8x4"
    run = write_run(group / "version_0", [0.70, 0.75], seed=0)
    _stage_folder(run, "validate_0", 0.75)
    _stage_folder(run, "test_0", 0.74)
    _stage_folder(run, "predict_1", 0.74)
    summaries, problems = summarize.summarize([str(tmp_path / "runs")])
    assert problems == []  # test_0 is not "a run that has not finished a validation epoch"
    assert [(s.preset, s.n, s.group) for s in summaries] == [("cifar100/kd_ls/resnet32x4_resnet8x4", 1, group)]
    # a run whose logger version happens to be called test_0 (no run folder above it) is still a run
    write_run(tmp_path / "other" / "g" / "test_0", [0.6], seed=1)
    summaries, _ = summarize.summarize([str(tmp_path / "other")])
    assert [s.n for s in summaries] == [1]


def _edit_config(run: Path, **settings) -> None:
    """Set dotted ``settings`` (``trainer.max_epochs``, ...) in ``run``'s config.yaml."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    for dotted, value in settings.items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_of_one_preset_with_different_recipes_are_separate_rows(tmp_path, capsys):
    group = tmp_path / "runs" / "cifar100" / "kd_ls" / "resnet32x4_resnet8x4"
    runs = [
        write_run(group / "version_0", [0.10], seed=0),  # 1 epoch
        write_run(group / "version_1", [0.10, 0.20], seed=0),  # 2 epochs
        write_run(group / "version_2", [0.10, 0.30], seed=1),  # 2 epochs, another seed: the same recipe
        write_run(group / "version_3", [0.70] * 15, seed=0),  # 15 epochs
        write_run(group / "version_4", [0.60] * 15, seed=2),  # 15 epochs, another learning rate
        write_run(group / "version_5", [0.50] * 15, seed=3),  # 15 epochs, resumed from version_3's last.ckpt
    ]
    for run in runs:  # the logger's version differs from run to run, as the CLI writes it
        _edit_config(run, **{"trainer.logger.class_path": "CSVLogger", "trainer.logger.init_args.version": run.name})
    _edit_config(runs[4], **{"model.init_args.optimizer.init_args.lr": 0.1})
    _edit_config(runs[5], ckpt_path=str(runs[3] / "checkpoints" / "last.ckpt"))

    summaries, problems = summarize.summarize([str(tmp_path / "runs")])
    assert problems == []
    rows = {(s.runs[0].max_epochs, s.n, tuple(r.seed for r in s.runs)) for s in summaries}
    assert rows == {(1, 1, (0,)), (2, 2, (0, 1)), (15, 2, (0, 3)), (15, 1, (2,))}

    assert summarize.main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    preset = "cifar100/kd_ls/resnet32x4_resnet8x4"
    assert f"| {preset} (lr=unset, max_epochs=1) | 1 | 0 | 1 | 10.00 | 10.00 |" in out
    assert f"| {preset} (lr=unset, max_epochs=2) | 2 | 0, 1 | 2 | 25.00 ± 7.07 | 25.00 ± 7.07 |" in out
    assert f"| {preset} (lr=unset, max_epochs=15) | 2 | 0, 3 | 15 | 60.00 ± 14.14 |" in out
    assert f"| {preset} (lr=0.1, max_epochs=15) | 1 | 2 | 15 | 60.00 | 60.00 |" in out
    assert "pooled only when their config.yaml settings are equal" in out


def test_a_failed_run_is_reported_as_failed_and_not_pooled(tmp_path, capsys):
    group = tmp_path / "runs" / "cifar100" / "kd" / "vgg13_vgg8"
    kwargs = {"standardize": False, "teacher": "vgg13", "student": "vgg8", "max_epochs": 3}
    for seed in (0, 1):
        run = write_run(group / f"version_{seed}", [0.70, 0.71, 0.72 + seed / 100], seed=seed, **kwargs)
        (run / "status.json").write_text(json.dumps({"status": "finished"}))
    crashed = write_run(group / "version_2", [0.10], seed=2, **kwargs)  # crashed in its second epoch
    error = "FloatingPointError: the training loss is nan at epoch 1"
    (crashed / "status.json").write_text(json.dumps({"status": "failed", "error": error}))
    early = group / "version_3"  # crashed before its first validation: no val/acc1 at all
    early.mkdir()
    (early / "metrics.csv").write_text("epoch,step,train/loss_step\n0,9,nan\n")
    (early / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    write_run(group / "version_4", [0.40], seed=4, **kwargs)  # no status.json: read as it stands (unfinished)

    summaries, problems = summarize.summarize([str(tmp_path / "runs")])
    # the unfinished run is a row of its own, after the finished ones
    assert [[run.seed for run in s.runs] for s in summaries] == [[0, 1], [4]]
    assert sorted(problems) == [
        f"{crashed}: failed during training (status.json): {error}",
        f"{early}: failed during training (status.json): RuntimeError: out of memory",
    ]
    assert summarize.main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "| cifar100/kd/vgg13_vgg8 | 2 | 0, 1 | 3 | 72.50 ± 0.71 |" in out
    assert "| cifar100/kd/vgg13_vgg8 (unfinished) | 1 | 4 | 1 (1 unfinished) | 40.00 |" in out
    assert f"- {crashed}: failed during training (status.json): {error}" in out.splitlines()

    # only failed runs: nothing to summarize, and the error says why
    only = tmp_path / "only"
    only.mkdir()
    crashed.rename(only / "version_2")
    assert summarize.main([str(only)]) == 1
    assert "failed during training (status.json)" in capsys.readouterr().err


def test_methods_with_and_without_ls_get_the_fidelity_verdict(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, (kd, ls) in enumerate([(0.50, 0.53), (0.51, 0.54), (0.52, 0.55)]):
        write_run(runs / "kd" / f"version_{seed}", [kd - 0.1, kd], seed=seed, standardize=False)
        write_run(runs / "kd_ls" / f"version_{seed}", [ls - 0.1, ls], seed=seed)
    # an unfinished LS run is in the table but not in the verdict (its best epoch may still come)
    write_run(runs / "kd_ls" / "version_3", [0.10], seed=3, max_epochs=2)
    assert summarize.main([str(runs)]) == 0
    out = capsys.readouterr().out
    # KD 50, 51, 52 (mean 51, std 1); KD+LS 53, 54, 55: +3 pp, SE sqrt(1/3 + 1/3) = 0.816, 3.67 SE
    assert "- KD+LS beats KD by +3.00 pp = +3.7 SE (SE 0.82, pooled std 1.00, n 3/3)" in out.splitlines()
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 | 3 | 0, 1, 2 | 2 | 54.00 ± 1.00 |" in out
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 (unfinished) | 1 | 3 | 1 (1 unfinished) | 10.00 |" in out


def test_ls_verdicts_pair_imagenet_presets_too(tmp_path, capsys):
    runs = tmp_path / "runs"
    imagenet = {"data": "lightning_kd.data.ImageNetDataModule", "teacher": "torchvision/resnet34"}
    imagenet["student"] = "torchvision/resnet18"
    write_run(runs / "kd" / "version_0", [0.70], seed=0, standardize=False, **imagenet)
    write_run(runs / "kd_ls" / "version_0", [0.71], seed=0, **imagenet)
    assert summarize.main([str(runs)]) == 0
    out = capsys.readouterr().out
    assert "imagenet/r34_r18/kd_ls" in out
    assert "- KD+LS vs KD: +1.00 pp from 1 and 1 run(s); no seed spread with a single run, no verdict" in out


def test_the_verdict_rule_is_shared_with_the_fidelity_runner():
    from lightning_kd.apps.verdict import verdict

    spec = importlib.util.spec_from_file_location("fidelity", REPO / "benchmarks" / "fidelity.py")
    fidelity = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fidelity", fidelity)  # dataclasses look their module up there
    fidelity = sys.modules["fidelity"]
    if fidelity.__dict__.get("compare") is None:
        spec.loader.exec_module(fidelity)
    a = fidelity.Summary("kd_ls", (0, 1), (52.0, 53.0), (51.0, 52.0), (1.0, 1.0))
    b = fidelity.Summary("kd", (0, 1), (52.5, 52.9), (51.0, 52.0), (1.0, 1.0))
    assert fidelity.compare(a, b) == verdict("KD+LS", [52.0, 53.0], "KD", [52.5, 52.9])
    assert "within 2 SE" in fidelity.compare(a, b)
    assert verdict("A", [1.0], "B", []) == "A vs B: not measured (no complete run of B)"
    assert "no verdict" in verdict("A", [1.0], "B", [2.0])
    assert "worse by -3.00 pp" in verdict("A", [50.0, 51.0, 52.0], "B", [53.0, 54.0, 55.0])


def test_a_run_made_before_an_argument_existed_pools_with_runs_that_list_its_default(tmp_path):
    """config.yaml lists the arguments a class had when the run ran: a later run lists a new, defaulted one too."""
    group = tmp_path / "runs" / "kd_ls"
    for seed in (0, 1, 2):
        write_run(group / f"version_{seed}", [0.5, 0.6 + seed / 100], seed=seed)
    for seed, view_keys in ((1, False), (2, True)):  # version_1 lists the default, version_2 sets another value
        config_path = group / f"version_{seed}" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["data"]["init_args"].update(view_keys=view_keys, augmentation="reference", image_size=32)
        config_path.write_text(yaml.safe_dump(config))
    summaries, problems = summarize.summarize([str(group)])
    assert problems == []
    assert [[run.seed for run in s.runs] for s in summaries] == [[0, 1], [2]]
    assert [s.distinct for s in summaries] == [
        (("data.init_args.view_keys", "false"),),
        (("data.init_args.view_keys", "true"),),
    ]
    filled = summarize.with_defaults(
        {"class_path": "lightning_kd.data.CIFAR100DataModule", "init_args": {"batch_size": 8}}
    )
    assert filled["init_args"]["batch_size"] == 8  # a listed value wins over the default
    assert filled["init_args"]["view_keys"] is False
    assert filled["init_args"]["augmentation"] == "reference"
    unknown = {"class_path": "not_a_module.Thing", "init_args": {"a": 1}}
    assert summarize.with_defaults(unknown) == unknown  # a class that cannot be imported is compared as written


def test_an_ls_preset_with_several_recipes_is_not_compared(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs / "kd" / f"version_{seed}", [0.50 + seed / 100], seed=seed, standardize=False)
        write_run(runs / "kd_ls" / f"version_{seed}", [0.52 + seed / 100], seed=seed)
        write_run(runs / "kd_ls" / f"version_{seed + 2}", [0.3, 0.53 + seed / 100], seed=seed)  # 2 epochs: a recipe
    assert summarize.main([str(runs)]) == 0
    out = capsys.readouterr().out
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 (max_epochs=1) | 2 | 0, 1 |" in out
    assert "| cifar100/kd_ls/resnet32x4_resnet8x4 (max_epochs=2) | 2 | 0, 1 |" in out
    line = next(line for line in out.splitlines() if line.startswith("- KD+LS vs KD"))
    assert "not compared: cifar100/kd_ls/resnet32x4_resnet8x4 has 2 and cifar100/kd/resnet32x4_resnet8x4 1 rows" in line


def write_record(results: Path, preset: str, seed: int, top1: list[float], **fields) -> Path:
    """A record as benchmarks/fidelity.py writes it (run_one)."""
    record = {
        "record_version": 1,
        "status": "complete",
        "preset": preset,
        "preset_path": f"configs/cifar100/cpu_scale/{preset}.yaml",
        "seed": seed,
        "best_top1": max(top1),
        "last_top1": top1[-1],
        "val_top1": top1,
        "epochs": len(top1),
        "wall_time_s": 60.0,
        "run_dir": f"runs/cifar100/cpu_scale/{preset}/version_{seed}",
        "command": f"python -m lightning_kd fit --config configs/cifar100/cpu_scale/{preset}.yaml",
        "extra_args": [],
        **fields,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{preset}__seed{seed}.json"
    path.write_text(json.dumps(record))
    return path


def test_fidelity_records_are_summarized_like_run_folders(tmp_path, capsys):
    results = tmp_path / "fidelity_results"
    for seed in (0, 1, 2):
        write_record(results, "mlkd", seed, [40.0, 53.0 + seed])
        write_record(results, "mlkd_ls", seed, [40.0, 52.0 + seed, 51.0])
    (results / "mlkd_ls__seed3.running").write_text("{}")  # the runner's marker of a run in progress: not a record
    write_record(results, "mlkd", 3, [10.0], status="running")
    write_record(results, "mlkd", 4, [0.5], record_version=99)
    (results / "table.md").write_text("| not | a record |\n")
    assert summarize.main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "| cifar100/cpu_scale/mlkd | 3 | 0, 1, 2 | 2 | 54.00 ± 1.00 | 54.00 ± 1.00 | — | — |" in out
    assert "| cifar100/cpu_scale/mlkd_ls | 3 | 0, 1, 2 | 3 | 53.00 ± 1.00 | 51.00 ± 0.00 | — | — |" in out
    assert f"- {results / 'mlkd__seed3.json'}: status 'running', not 'complete': the run did not finish." in out
    assert "record_version 99 is not one this package reads" in out
    # -1 pp against SE sqrt(1/3 + 1/3) = 0.82: within 2 SE
    assert (
        "- MLKD+LS does not clearly beat MLKD: -1.00 pp = -1.2 SE (SE 0.82, pooled std 1.00, n 3/3), within 2 SE" in out
    )

    # records with other extra arguments are another recipe
    write_record(tmp_path / "smoke", "mlkd", 0, [20.0], extra_args=["--trainer.max_epochs", "1"])
    summaries, _ = summarize.summarize([str(results / "mlkd__seed0.json"), str(tmp_path / "smoke")])
    assert [s.n for s in summaries] == [1, 1]
    # a record holds val/acc1 only; another file is refused by name
    assert summarize.main([str(results / "mlkd__seed0.json"), "--metric", "val/acc5"]) == 1
    assert "holds val/acc1 only, not 'val/acc5'" in capsys.readouterr().err
    with pytest.raises(summarize.SummaryError, match=r"not a metrics\.csv file, a fidelity record"):
        summarize.summarize([str(results / "table.md")])
    status = tmp_path / "run__seed0.json"
    status.write_text(json.dumps({"status": "finished"}))  # a status.json by another name
    with pytest.raises(summarize.SummaryError, match="not a fidelity record"):
        summarize.read_record(status)


def test_the_committed_fidelity_records_print_the_runners_table():
    """`lightning-kd summarize benchmarks/fidelity_results` (docs/fidelity.md) gives the runner's means and verdicts."""
    spec = importlib.util.spec_from_file_location("fidelity", REPO / "benchmarks" / "fidelity.py")
    fidelity = sys.modules.setdefault("fidelity", importlib.util.module_from_spec(spec))
    if fidelity.__dict__.get("compare") is None:
        spec.loader.exec_module(fidelity)
    results = REPO / "benchmarks" / "fidelity_results"
    records = [r for r in map(lambda p: fidelity.load_record(p)[0], sorted(results.glob("*__seed*.json"))) if r]
    assert records, "benchmarks/fidelity_results holds the committed records"
    summaries, problems = summarize.summarize([str(results)])
    assert problems == []
    rows = {s.preset.rsplit("/", 1)[-1]: s for s in summaries}
    assert set(rows) == {r["preset"] for r in records}
    for name, row in rows.items():
        expected = fidelity.summarize(records, name)
        assert tuple(run.seed for run in row.runs) == expected.seeds
        assert tuple(run.best for run in row.runs) == pytest.approx(expected.best)
        assert tuple(run.last for run in row.runs) == pytest.approx(expected.last)
    verdicts = summarize.ls_verdicts(summaries)
    for better, baseline in fidelity.COMPARISONS:
        if better in rows and baseline in rows and better.endswith("_ls"):
            assert (
                fidelity.compare(fidelity.summarize(records, better), fidelity.summarize(records, baseline)) in verdicts
            )
