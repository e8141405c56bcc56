"""Shipped configs: every full config follows the run-folder convention; the demo, teacher, student and experiment
configs parse, are complete and instantiate (data pointed at fake on-disk data). The method presets
(configs/cifar100/<method>/, configs/imagenet/) are instantiated by tests/test_presets.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.cli import KDLightningCLI
from lightning_kd.losses import KD
from lightning_kd.models import create_model, list_models
from tests.helpers.fake_data import write_fake_cifar100

REPO = Path(__file__).resolve().parents[1]
OWN_FOLDERS = ("demo", "cifar100/teachers", "cifar100/students", "cifar100/experiments")
CONFIGS = sorted(p for folder in OWN_FOLDERS for p in (REPO / "configs" / folder).glob("*.yaml"))
CONFIG_IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]
# every complete config (fragments meant as a second --config, such as configs/loggers/wandb.yaml, name no model class)
FULL_CONFIGS = [
    p
    for p in sorted((REPO / "configs").rglob("*.yaml"))
    if "class_path" in ((yaml.safe_load(p.read_text()) or {}).get("model") or {})
]
TEACHER_PRESETS = ["resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"]
LOW_LR_STUDENTS = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root, n_train=40, n_test=20)
    return root


def _overrides(config: dict, tmp_path: Path, fake_cifar: Path) -> list[str]:
    """Point data and teacher weights of a config at local fakes; everything else stays as shipped."""
    args = [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    data = config["data"]
    if data["class_path"].endswith("CIFAR100DataModule"):
        args += [f"--data.init_args.data_dir={fake_cifar}", "--data.init_args.download=false"]
        args += ["--data.init_args.verify_checksums=false", "--data.init_args.num_workers=0"]
    model = config["model"]["init_args"]
    if config["model"]["class_path"].endswith("DistillationModule"):
        num_classes = 10 if data["class_path"].endswith("DigitsDataModule") else 100
        teacher = create_model(model["teacher"], num_classes=num_classes)
        weights = tmp_path / "teacher.pth"
        torch.save({"model": teacher.state_dict(), "epoch": 240}, weights)  # the reference checkpoint format
        args.append(f"--model.init_args.teacher_weights={weights}")
    return args


def _instantiate(path: Path, args: list[str]) -> KDLightningCLI:
    return KDLightningCLI(
        model_class=None,
        args=["--config", str(path), *args],
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=True,
    )


def test_configs_are_found():
    assert len(CONFIGS) >= 4 + 6 + 10
    assert {f"cifar100/teachers/{m}.yaml" for m in TEACHER_PRESETS} <= set(CONFIG_IDS)


def test_every_full_config_follows_the_run_folder_convention():
    """runs/<group>/<name>/version_N/ for every run: a CSVLogger without `version`, checkpoints without `dirpath`."""
    assert len(FULL_CONFIGS) >= len(CONFIGS)
    problems = []
    for path in FULL_CONFIGS:
        trainer = yaml.safe_load(path.read_text())["trainer"]
        logger = trainer.get("logger") or {}
        init = logger.get("init_args", {})
        name = path.relative_to(REPO / "configs")
        if logger.get("class_path") != "lightning.pytorch.loggers.CSVLogger":
            problems.append(f"{name}: logger {logger.get('class_path')!r} (the CSVLogger keeps the run folder)")
        if "version" in init:
            problems.append(f"{name}: pins the logger version {init['version']!r} (each run needs its own folder)")
        if trainer.get("default_root_dir") != f"{init.get('save_dir')}/{init.get('name')}":
            problems.append(f"{name}: default_root_dir is not <save_dir>/<name>")
        for callback in trainer.get("callbacks") or []:
            if callback["class_path"].endswith("ModelCheckpoint") and "dirpath" in callback.get("init_args", {}):
                problems.append(f"{name}: ModelCheckpoint dirpath (leave it unset: <run folder>/checkpoints)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_config_is_complete_and_instantiates(path, tmp_path, fake_cifar):
    config = yaml.safe_load(path.read_text())
    assert {"seed_everything", "trainer", "model", "data"} <= set(config)
    init = config["model"]["init_args"]
    # nothing hidden in code defaults: the optimizer and the schedule are spelled out
    assert init["optimizer"]["class_path"] == "torch.optim.SGD"
    assert "lr_scheduler" in init
    assert config["trainer"]["max_epochs"] > 0

    cli = _instantiate(path, _overrides(config, tmp_path, fake_cifar))
    model, data = cli.model, cli.datamodule
    # a model name is built by our zoo, never resolved to a same-named torchvision class (e.g. MobileNetV2)
    name = init.get("model", init.get("student"))
    assert type(model.network).__module__.startswith("lightning_kd.models"), name
    assert model.num_classes == data.num_classes
    assert model.network.num_classes == data.num_classes
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert optimizer.param_groups[0]["lr"] == init["optimizer"]["init_args"]["lr"]
    if isinstance(model, DistillationModule):
        assert isinstance(model.loss, KD)
        assert model.loss.standardize == init["loss"]["init_args"]["standardize"]


@pytest.mark.parametrize("kind", ["teachers", "students"])
def test_cifar_presets_follow_the_reference_recipe(kind):
    paths = sorted((REPO / "configs" / "cifar100" / kind).glob("*.yaml"))
    assert paths
    for path in paths:
        config = yaml.safe_load(path.read_text())
        init = config["model"]["init_args"]
        assert init["model"] == path.stem
        assert init["model"] in list_models()
        assert config["trainer"]["max_epochs"] == 240
        assert config["data"]["init_args"]["batch_size"] == 64
        sgd = init["optimizer"]["init_args"]
        expected_lr = 0.01 if path.stem in LOW_LR_STUDENTS else 0.05
        assert (sgd["lr"], sgd["momentum"], sgd["weight_decay"]) == (expected_lr, 0.9, 0.0005), path.name
        schedule = init["lr_scheduler"]
        assert schedule["class_path"] == "torch.optim.lr_scheduler.MultiStepLR"
        assert schedule["init_args"] == {"milestones": [150, 180, 210], "gamma": 0.1}


@pytest.mark.parametrize("teacher", TEACHER_PRESETS)
def test_teacher_preset_checkpoint_works_as_teacher_weights(teacher, tmp_path, fake_cifar):
    path = REPO / "configs" / "cifar100" / "teachers" / f"{teacher}.yaml"
    config = yaml.safe_load(path.read_text())
    cli = _instantiate(path, [*_overrides(config, tmp_path, fake_cifar), "--data.init_args.batch_size=4"])
    assert isinstance(cli.model, ClassificationModule)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(ckpt)

    module = DistillationModule("resnet8", teacher, KD(), num_classes=100, teacher_weights=str(ckpt))
    trained = cli.model.model.state_dict()
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, trained[key]), key
