"""The ViT table's presets (configs/cifar100/vit/): values against the reference, parsed, built, and fitted.

The expected values are typed here from the official ``tiny-transformers`` configs and README (docs/sources.md §7),
independently of the files. Every preset is printed with ``--print_config`` and instantiated by the CLI's parser
(networks, losses, optimizer, scheduler, data at 224 px on fake CIFAR files); one preset per student and per
objective, and the guidance teacher, fit one epoch through the real ``lightning-kd fit``, whose run folder the
summary then reads.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.apps import summarize
from lightning_kd.cli import KDLightningCLI
from lightning_kd.cli import main as cli_main
from lightning_kd.losses import KD, LocalityGuidance, TokenKD
from lightning_kd.models import create_model
from lightning_kd.optim import SelectiveDecayAdamW, SelectiveDecaySGD, WarmupCosineLR
from tests.helpers.fake_data import write_fake_cifar100

pytest.importorskip("timm")

REPO = Path(__file__).resolve().parents[1]
VIT = REPO / "configs" / "cifar100" / "vit"
# student: (INTER_STUDENT_INDEX of its *_ours.yaml, its width at those blocks, KD+LS base temperature and KD weight:
# the log the README links for DeiT (deit-ti_c100_KD_ours_3_10.txt), LOGIT_TEMP of the other *_KD_ours.yaml with the
# default EXTRA_WEIGHT_IN 9)
STUDENTS = {
    "deit_tiny": ([0, 6, 11], 192, (3.0, 10.0)),
    "t2t_vit_7": ([0, 3, 6], 256, (2.0, 9.0)),
    "pit_tiny": ([0, 6, 11], [64, 128, 256], (2.0, 9.0)),
    "pvt_tiny": ([0, 3, 7], [64, 128, 512], (2.0, 9.0)),
}
METHODS = ("base", "lg", "kd_ls")
# the tiny-transformers README: Base / ECCV2022 / KD+Ours
PAPER = {
    "deit_tiny": (65.08, 78.15, 78.55),
    "t2t_vit_7": (69.37, 78.35, 78.43),
    "pit_tiny": (73.58, 78.48, 78.76),
    "pvt_tiny": (69.22, 77.07, 78.43),
}
NAMES = ["resnet56_pycls"] + [f"{student}_{method}" for student in STUDENTS for method in METHODS]
TEACHER_WEIGHTS = "runs/cifar100/vit/resnet56_pycls/latest/checkpoints/best.ckpt"
# every preset fits one epoch (one batch of 2) through the real CLI


def _load(name: str) -> dict:
    return yaml.safe_load((VIT / f"{name}.yaml").read_text())


def _split(name: str) -> tuple[str, str]:
    method = next(m for m in METHODS if name.endswith("_" + m))
    return name[: -len(method) - 1], method


def test_exactly_the_vit_presets_exist():
    assert sorted(p.stem for p in VIT.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_vit_preset_values_match_the_reference(name):
    path = VIT / f"{name}.yaml"
    config = _load(name)
    text = path.read_text()
    assert all(len(line) <= 120 for line in text.splitlines())
    trainer = config["trainer"]
    assert (trainer["max_epochs"], trainer["devices"], trainer["precision"]) == (300, 1, "32-true")
    assert trainer["default_root_dir"] == f"runs/cifar100/vit/{name}"
    assert trainer["logger"]["init_args"] == {"save_dir": "runs/cifar100/vit", "name": name}
    data = config["data"]
    assert data["class_path"] == "lightning_kd.data.CIFAR100DataModule"
    init = config["model"]["init_args"]
    # TRAIN.BATCH_SIZE 128, TEST.BATCH_SIZE 200, 4 workers, the loader drops its last training batch
    expected_data = {"batch_size": 128, "val_batch_size": 200, "num_workers": 4, "drop_last": True}
    assert {key: data["init_args"][key] for key in expected_data} == expected_data
    assert data["init_args"]["augmentation"] == "pycls"
    if name == "resnet56_pycls":  # r-56_c100.yaml: IMG_SIZE 32, SGD 0.1 nesterov, wd 5e-4, cosine to 0, no warm-up
        assert config["model"]["class_path"] == "lightning_kd.ClassificationModule"
        assert init["model"] == "resnet56_pycls"
        assert data["init_args"]["image_size"] == 32
        assert init["optimizer"] == {
            "class_path": "lightning_kd.optim.SelectiveDecaySGD",
            "init_args": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005},
        }
        schedule = {"max_epochs": 300, "warmup_epochs": 0, "warmup_factor": 0.1, "min_lr": 0.0}
        assert init["lr_scheduler"] == {"class_path": "lightning_kd.optim.WarmupCosineLR", "init_args": schedule}
        assert "Paper's top-1" not in text  # the README gives no number for the teacher
        return
    # the students: AdamW 5e-4, wd 0.05, warm-up 20 epochs from 0.001x, cosine to 5e-6 over 300
    assert data["init_args"]["image_size"] == 224
    assert init["optimizer"] == {
        "class_path": "lightning_kd.optim.SelectiveDecayAdamW",
        "init_args": {"lr": 0.0005, "betas": [0.9, 0.999], "weight_decay": 0.05},
    }
    schedule = {"max_epochs": 300, "warmup_epochs": 20, "warmup_factor": 0.001, "min_lr": 5e-6}
    assert init["lr_scheduler"] == {"class_path": "lightning_kd.optim.WarmupCosineLR", "init_args": schedule}
    student, method = _split(name)
    blocks, channels, (temperature, kd_weight) = STUDENTS[student]
    assert f"Paper's top-1: {PAPER[student][METHODS.index(method)]:.2f}%" in text
    if method == "base":
        assert config["model"]["class_path"] == "lightning_kd.ClassificationModule"
        assert init["model"] == student
        return
    assert config["model"]["class_path"] == "lightning_kd.DistillationModule"
    assert (init["teacher"], init["teacher_weights"], init["teacher_input_size"]) == (
        "resnet56_pycls",
        TEACHER_WEIGHTS,
        32,
    )
    if method == "lg":  # ENABLE_INTER: CE + 2.5 x guidance, linear transform, teacher stages 0, 1, 2
        assert init["student"] == student
        assert init["loss"] == {
            "class_path": "lightning_kd.losses.KD",
            "init_args": {"temperature": 4.0, "ce_weight": 1.0, "kd_weight": 0.0, "standardize": False},
        }
        guidance = {
            "student_channels": channels,
            "teacher_channels": [16, 32, 64],
            "student_layers": blocks,
            "teacher_layers": [0, 1, 2],
            "transform": "linear",
            "weight": 2.5,
        }
        assert init["feature_loss"] == {"class_path": "lightning_kd.losses.LocalityGuidance", "init_args": guidance}
        return
    # KD + LS: standardized; the trainer weights the cross-entropy 0.5 under ENABLE_LOGIT; no feature guidance
    loss_args = {"temperature": temperature, "kd_weight": kd_weight, "ce_weight": 0.5, "standardize": True}
    loss_class = "TokenKD" if student == "deit_tiny" else "KD"
    assert init["loss"] == {"class_path": f"lightning_kd.losses.{loss_class}", "init_args": loss_args}
    assert init["student"] == ("deit_tiny_distilled" if student == "deit_tiny" else student)
    assert init["feature_loss"] is None


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vit_presets")
    write_fake_cifar100(root / "cifar", n_train=8, n_test=4)
    teacher = root / "resnet56_pycls.pth"
    torch.save(create_model("resnet56_pycls", num_classes=100).state_dict(), teacher)
    return {"root": root, "cifar": root / "cifar", "teacher": teacher}


def _overrides(name: str, fake: dict[str, Path], runs: Path) -> list[str]:
    args = [
        f"--trainer.default_root_dir={runs / name}",
        f"--trainer.logger.init_args.save_dir={runs}",
        f"--data.init_args.data_dir={fake['cifar']}",
        "--data.init_args.download=false",
        "--data.init_args.verify_checksums=false",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2",
        "--data.init_args.val_batch_size=2",
    ]
    if "teacher" in _load(name)["model"]["init_args"]:
        args.append(f"--model.init_args.teacher_weights={fake['teacher']}")
    return args


@pytest.fixture(scope="module")
def parser(fake, tmp_path_factory):
    """The CLI's parser, built once (building it costs seconds, parsing a file with it a fraction of one)."""
    runs = tmp_path_factory.mktemp("runs")
    args = ["--config", str(VIT / "deit_tiny_kd_ls.yaml"), *_overrides("deit_tiny_kd_ls", fake, runs)]
    return KDLightningCLI(
        model_class=None, args=args, run=False, subclass_mode_model=True, subclass_mode_data=True
    ).parser


@pytest.mark.parametrize("name", NAMES)
def test_vit_preset_prints_its_config(name, parser):
    output = io.StringIO()
    with redirect_stdout(output), pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--config", str(VIT / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(output.getvalue())
    shipped = _load(name)
    assert printed["model"]["class_path"] == shipped["model"]["class_path"]
    for part in ("optimizer", "lr_scheduler", "loss"):
        if part in shipped["model"]["init_args"]:
            ours, theirs = printed["model"]["init_args"][part], shipped["model"]["init_args"][part]
            assert ours["class_path"] == theirs["class_path"]
            assert {key: ours["init_args"][key] for key in theirs["init_args"]} == theirs["init_args"]
    shipped_data = shipped["data"]["init_args"]
    assert {key: printed["data"]["init_args"][key] for key in shipped_data} == shipped_data


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
@pytest.mark.parametrize("name", NAMES)
def test_vit_preset_builds_networks_loss_optimizer_and_data(name, parser, fake, tmp_path):
    config = _load(name)
    cfg = parser.parse_args(["--config", str(VIT / f"{name}.yaml"), *_overrides(name, fake, tmp_path)])
    init = parser.instantiate_classes(cfg)
    model, data = init.model, init.data
    spec = config["model"]["init_args"]
    assert model.num_classes == data.num_classes == 100
    optimizers = model.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, WarmupCosineLR)
    base_lr = spec["optimizer"]["init_args"]["lr"]
    if name == "resnet56_pycls":  # no warm-up: epoch 0 runs at the base rate
        assert isinstance(model, ClassificationModule)
        assert isinstance(optimizer, SelectiveDecaySGD)
        expected_first = base_lr
    else:  # the warm-up starts at 0.001 x the base rate
        assert isinstance(optimizer, SelectiveDecayAdamW)
        expected_first = base_lr * 0.001
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([expected_first] * 2)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [
        0.0,
        spec["optimizer"]["init_args"]["weight_decay"],
    ]
    if isinstance(model, DistillationModule):
        assert model.teacher_available
        assert model.hparams["teacher_input_size"] == 32
        loss_class = {"TokenKD": TokenKD, "KD": KD}[spec["loss"]["class_path"].rsplit(".", 1)[-1]]
        assert type(model.loss) is loss_class
        if name.endswith("_lg"):
            assert isinstance(model.feature_loss, LocalityGuidance)
            # the adapters (one 1x1 convolution per guided block) are optimized with the student
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            assert {id(p) for p in model.feature_loss.parameters()} <= held
        else:
            assert model.feature_loss is None
    data.setup("fit")
    images, targets = next(iter(data.train_dataloader()))
    size = 32 if name == "resnet56_pycls" else 224
    assert images.shape == (2, 3, size, size)
    assert targets.shape == (2,)


@pytest.mark.filterwarnings("ignore:Loading CIFAR-100")
@pytest.mark.parametrize("name", NAMES)
def test_vit_preset_fits_one_epoch_through_the_cli(name, fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    args = [
        "fit",
        "--config",
        str(VIT / f"{name}.yaml"),
        *_overrides(name, fake, runs),
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_progress_bar=false",
    ]
    assert cli_main(args) == 0
    run = runs / name / "version_0"
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["init_args"]["augmentation"] == "pycls"
    # the run folder the CLI wrote is summarized as its preset, beside the paper's number
    capsys.readouterr()
    (summary,), problems = summarize.summarize([str(run)])
    assert problems == []
    assert summary.preset == f"cifar100/vit/{name}"
    if name == "resnet56_pycls":
        assert summary.paper is None
        # the students' teacher_weights path: <save_dir>/resnet56_pycls/latest/checkpoints/best.ckpt
        best = runs / name / "latest" / "checkpoints" / "best.ckpt"
        assert best.resolve() == (run / "checkpoints" / "best.ckpt").resolve()
        student = DistillationModule(
            "deit_tiny_distilled", "resnet56_pycls", TokenKD(), num_classes=100, teacher_weights=str(best)
        )
        trained = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        for key, value in student.teacher.state_dict().items():
            assert torch.equal(value, trained[f"model.{key}"]), key
    else:
        student, method = _split(name)
        assert summary.paper.top1 == PAPER[student][METHODS.index(method)]
