"""Several teachers (an ensemble whose logits are the mean of theirs): math, record, reload, metrics, DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model
from lightning_kd.models.ensemble import LogitEnsemble, mean_logits
from lightning_kd.teacher import Teacher
from tests.helpers import ddp_ensemble
from tests.helpers.tiny import TinyNet, separable_loaders

ROOT = Path(__file__).resolve().parents[1]


def _trained_like(seed: int, width: int = 8) -> TinyNet:
    """A TinyNet with random weights and non-trivial BatchNorm statistics (so folding changes something)."""
    torch.manual_seed(seed)
    net = TinyNet(width=width)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_two_identical_teachers_give_the_terms_of_one():
    x, y = _batch()
    student = _trained_like(0).eval()  # no dropout: both modules see the same student logits
    one = DistillationModule(student, _trained_like(1), KD(temperature=4.0))
    two = DistillationModule(student, [_trained_like(1), _trained_like(1)], KD(temperature=4.0))
    assert isinstance(two.teacher, LogitEnsemble)
    assert len(two.teacher.members) == 2
    _, terms_one = one.training_terms(x, y)
    _, terms_two = two.training_terms(x, y)
    assert terms_one.keys() == terms_two.keys()
    for name in terms_one:
        torch.testing.assert_close(terms_two[name], terms_one[name], rtol=1e-6, atol=1e-7)


def test_two_different_teachers_give_kd_against_the_mean_of_their_logits():
    x, y = _batch()
    a, b, student = _trained_like(1), _trained_like(2, width=16), _trained_like(0).eval()
    loss = KD(temperature=2.0, kd_weight=9.0, standardize=True)
    module = DistillationModule(student, [a, b], loss)
    _, terms = module.training_terms(x, y)
    with torch.no_grad():
        expected_teacher = (a.eval()(x) + b.eval()(x)) / 2
    expected = loss(student(x), expected_teacher, y)
    torch.testing.assert_close(terms["kd"], expected["kd"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["ce"], expected["ce"], rtol=1e-6, atol=1e-7)
    # the ensemble teacher differs from either member: the mean, not a pick
    single = loss(student(x), a(x), y)["kd"]
    assert not torch.allclose(single, terms["kd"])


def test_every_member_is_frozen_in_eval_mode_and_out_of_the_optimizer():
    module = DistillationModule(_trained_like(0), [_trained_like(1), _trained_like(2)], KD())
    module.train()
    for member in module.teacher.members:
        assert not member.training
        assert all(not p.requires_grad for p in member.parameters())
    trainable = {id(p) for p in module.trainable_parameters()}
    assert not trainable & {id(p) for p in module.teacher.parameters()}
    assert len(module.teacher_component.members) == 2
    # modules are recorded by class (a checkpoint cannot rebuild them: load_from_checkpoint asks for them)
    assert module.hparams["teacher_class"] == ["tests.helpers.tiny.TinyNet"] * 2
    assert "teacher" not in module.hparams


def test_mean_logits_of_views_and_of_one_member():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert mean_logits([a]) is a
    torch.testing.assert_close(mean_logits([a, b]), (a + b) / 2)
    views = mean_logits([(a, b), (b, a)])
    torch.testing.assert_close(views[0], (a + b) / 2)
    torch.testing.assert_close(views[1], (a + b) / 2)
    with pytest.raises(ValueError, match="at least 2 members"):
        LogitEnsemble([TinyNet()])


def test_folded_members_give_the_ensemble_logits():
    x, _ = _batch()
    module = DistillationModule(_trained_like(0), [_trained_like(1), _trained_like(2)], KD(), fold_teacher_bn=True)
    folded = module.teacher_network()
    assert folded is not module.teacher
    assert all(
        f is not m for f, m in zip(module.teacher_component.forward_members(), module.teacher.members, strict=True)
    )
    with torch.no_grad():
        torch.testing.assert_close(folded(x), module.teacher(x), rtol=1e-5, atol=1e-6)
        out = module.teacher_component.outputs(x)
        torch.testing.assert_close(out.logits, module.teacher(x), rtol=1e-5, atol=1e-6)
        for logits, member in zip(out.member_logits, module.teacher.members, strict=True):
            torch.testing.assert_close(logits, member(x), rtol=1e-5, atol=1e-6)


def test_teacher_weights_must_match_the_number_of_teachers(tmp_path):
    with pytest.raises(ValueError, match=r"teacher_weights has 1 entries but there are 2 teachers"):
        DistillationModule("resnet8", ["resnet8", "resnet8"], KD(), num_classes=10, teacher_weights=["a.pt"])
    with pytest.raises(ValueError, match=r"teacher_weights is one path .* but there are 2 teachers"):
        DistillationModule("resnet8", ["resnet8", "resnet8"], KD(), num_classes=10, teacher_weights="a.pt")
    with pytest.raises(ValueError, match="empty list"):
        DistillationModule("resnet8", [], KD(), num_classes=10)
    with pytest.raises(ValueError, match=r"teacher 1 predicts 5 classes but num_classes=4"):
        DistillationModule(TinyNet(), [TinyNet(), TinyNet(num_classes=5)], KD(), num_classes=4)


def test_one_missing_member_file_means_no_teacher_for_fit(tmp_path):
    good = tmp_path / "a.pt"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), good)
    with pytest.warns(UserWarning, match=r"does not exist"):
        module = DistillationModule(
            "resnet8", ["resnet8", "resnet8"], KD(), num_classes=10, teacher_weights=[str(good), str(tmp_path / "b")]
        )
    assert not module.teacher_available
    # the error names the missing member's file, not the whole list
    with pytest.raises(FileNotFoundError, match=r"teacher_weights '[^']*/b' does not exist"):
        module.setup("fit")


def test_ensemble_record_reloads_with_its_teachers_and_metrics(tmp_path):
    seed_everything(0)
    weights = []
    for i in range(2):
        torch.manual_seed(10 + i)
        path = tmp_path / f"teacher{i}.pt"
        torch.save(create_model("resnet8", num_classes=4).state_dict(), path)
        weights.append(str(path))
    module = DistillationModule(
        "resnet8", ["resnet8", "resnet8"], KD(), num_classes=4, teacher_weights=weights, lr_scheduler=None
    )
    assert module.hparams["teacher"] == ["resnet8", "resnet8"]
    assert module.hparams["teacher_weights"] == [str(Path(w).resolve()) for w in weights]
    train, val = separable_loaders(n=32, batch_size=16)
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train, val)
    metrics = trainer.callback_metrics
    assert {"teacher/val_acc1", "teacher/val_acc1_member0", "teacher/val_acc1_member1"} <= metrics.keys()
    # each member's accuracy is the one measured from that member alone
    x, y = val.dataset.tensors
    for i, member in enumerate(module.teacher.members):
        with torch.no_grad():
            alone = (member(x).argmax(1) == y).float().mean()
        assert float(metrics[f"teacher/val_acc1_member{i}"]) == pytest.approx(float(alone))
    ckpt = tmp_path / "ens.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)  # save_teacher=False: the student only
    reloaded = DistillationModule.load_from_checkpoint(ckpt)
    assert isinstance(reloaded.teacher, LogitEnsemble)
    for got, want in zip(reloaded.teacher.members, module.teacher.members, strict=True):
        for (name, a), (_, b) in zip(got.state_dict().items(), want.state_dict().items(), strict=True):
            torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(reloaded.student.state_dict()["fc.weight"], module.student.state_dict()["fc.weight"])


def test_teacher_component_is_the_source_of_teacher_outputs():
    module = DistillationModule(_trained_like(0), _trained_like(1), KD())
    assert isinstance(module.teacher_component, Teacher)
    x, _ = _batch()
    out = module.teacher_component.outputs(x)
    assert out.member_logits[0] is out.logits
    assert not out.logits.requires_grad
    assert dict(out.features) == {}


def test_two_teachers_under_ddp_log_what_one_process_logs(tmp_path):
    paths = []
    for i in range(2):
        torch.manual_seed(20 + i)
        paths.append(tmp_path / f"t{i}.pt")
        torch.save(create_model("resnet8", num_classes=10).state_dict(), paths[-1])
    results = {}
    for devices in (1, 2):
        result = subprocess.run(
            [sys.executable, ddp_ensemble.__file__, str(tmp_path), str(paths[0]), str(paths[1]), str(devices)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        results[devices] = json.loads((tmp_path / f"teacher_metrics_{devices}.json").read_text())
    assert set(results[2]) == {"teacher/val_acc1", "teacher/val_acc1_member0", "teacher/val_acc1_member1"}
    for name, value in results[1].items():
        assert results[2][name] == pytest.approx(value, abs=1e-7), name


def test_cli_fits_two_teachers_from_a_list_and_records_them(tmp_path):
    from lightning_kd.apps.cli_app import run_cli

    paths = []
    for i, name in enumerate(("resnet8", "resnet20")):
        torch.manual_seed(30 + i)
        paths.append(str(tmp_path / f"{name}.pt"))
        torch.save(create_model(name, num_classes=10).state_dict(), paths[-1])
    cli = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs/demo/kd_ls.yaml"),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--data.init_args.image_size=16",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--model.init_args.teacher=[resnet8, resnet20]",
            f"--model.init_args.teacher_weights=[{paths[0]}, {paths[1]}]",
        ]
    )
    module = cli.model
    assert isinstance(module.teacher, LogitEnsemble)
    assert module.hparams["teacher"] == ["resnet8", "resnet20"]
    assert module.hparams["teacher_weights"] == paths
    assert "teacher/val_acc1_member1" in cli.trainer.callback_metrics
    ckpt = Path(cli.trainer.checkpoint_callback.best_model_path)
    reloaded = DistillationModule.load_from_checkpoint(ckpt)
    assert [type(m).__name__ for m in reloaded.teacher.members] == [type(m).__name__ for m in module.teacher.members]
