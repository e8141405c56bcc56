"""`lightning-kd export-student`: the student alone, loadable by create_model, same logits, no teacher needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_kd.apps.export import export_student
from lightning_kd.cli import main
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import create_model
from lightning_kd.models.checkpoint import CheckpointFormatError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    """A digits KD checkpoint from the CLI (one batch); its teacher file is deleted afterwards."""
    tmp = tmp_path_factory.mktemp("export")
    teacher = tmp / "teacher.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), teacher)
    args = [
        "fit",
        "--config",
        str(REPO / "configs/demo/kd.yaml"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        f"--trainer.logger.init_args.save_dir={tmp / 'runs'}",
        "--data.init_args.image_size=16",
        f"--model.init_args.teacher_weights={teacher}",
    ]
    assert main(args) == 0
    teacher.unlink()
    return tmp / "runs/kd/version_0/checkpoints/last.ckpt"


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_exported_student_gives_the_same_logits(distilled, tmp_path, suffix, capsys):
    out = tmp_path / f"student{suffix}"
    assert main(["export-student", str(distilled), str(out)]) == 0
    assert "resnet8, 10 classes" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    data = DigitsDataModule(image_size=16)
    assert meta["architecture"] == "resnet8"
    assert meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(list(data.mean))
    assert meta["std"] == pytest.approx(list(data.std))
    assert meta["source_checkpoint"] == str(distilled.resolve())
    assert meta["format"] == ("safetensors" if suffix == ".safetensors" else "torch")

    exported = create_model(meta["architecture"], num_classes=meta["num_classes"], weights=str(out)).eval()
    reference = create_model("resnet8", num_classes=10).eval()
    state = torch.load(distilled, weights_only=True)["state_dict"]
    reference.load_state_dict({k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")})
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(exported(x), reference(x))
    if suffix == ".pth":
        assert set(torch.load(out, weights_only=True)) == set(reference.state_dict())


def test_classification_checkpoint_and_explicit_normalization(tmp_path):
    from lightning.pytorch import Trainer

    from lightning_kd import ClassificationModule

    module = ClassificationModule("resnet8", num_classes=10)
    trainer = Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=DigitsDataModule(image_size=16))
    ckpt = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(ckpt)

    meta = export_student(ckpt, tmp_path / "model.safetensors")
    assert (meta["architecture"], meta["num_classes"], meta["mean"]) == ("resnet8", 10, None)
    assert meta["normalization_source"].startswith("unknown")
    meta = export_student(ckpt, tmp_path / "model.safetensors", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    assert meta["mean"] == [0.5, 0.5, 0.5]
    loaded = create_model("resnet8", num_classes=10, weights=str(tmp_path / "model.safetensors"))
    assert torch.equal(loaded.fc.weight, module.model.fc.weight)


def test_bad_inputs_are_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        export_student(tmp_path / "missing.ckpt", tmp_path / "out.pth")
    assert main(["export-student", str(tmp_path / "missing.ckpt"), str(tmp_path / "out.pth")]) == 2
    assert "lightning-kd: error: Checkpoint not found" in capsys.readouterr().err
    plain = tmp_path / "plain.pth"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), plain)
    with pytest.raises(ValueError, match="is not a Lightning checkpoint of a lightning_kd module"):
        export_student(plain, tmp_path / "out.pth")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file"):
        create_model("resnet8", num_classes=10, weights=str(broken))
