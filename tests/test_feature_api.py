"""The feature API: a feature loss's layers come from the same forward passes as the logits, for student and teacher.

Covers :mod:`lightning_kd.features` (indices through ``forward_intermediates``, names through ``torch.fx``),
the teacher component (features beside the logits, folded or not), and ``DistillationModule(feature_loss=...)``: one
forward per network per step, the terms summed and logged, adapters optimized and checkpointed but not exported,
the record rebuilding the feature loss, and the refusals.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.features import feature_network
from lightning_kd.losses import AT, KD, MLKD, FitNet, LocalityGuidance
from lightning_kd.models import create_model
from tests.helpers.tiny import separable_loaders

pytestmark = pytest.mark.filterwarnings("ignore:The teacher .* is built with random weights")


def _net(name: str = "resnet8", seed: int = 0, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = create_model(name, classes)
    for module in net.modules():  # non-trivial BatchNorm statistics: folding then changes the computation
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("layers", [(1, 2, 3), (0, -1), ("layer1", "layer3.0.conv2")])
def test_feature_network_gives_the_logits_and_the_features_of_one_pass(layers):
    net = _net()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, features = feature_network(net, layers)(x)
        assert torch.equal(logits, net(x))
        if isinstance(layers[0], int):
            expected = [net.forward_intermediates(x)[i] for i in layers]
        else:
            captured = {}
            handles = [
                net.get_submodule(n).register_forward_hook(lambda _m, _a, out, n=n: captured.__setitem__(n, out))
                for n in layers
            ]
            net(x)
            for handle in handles:
                handle.remove()
            expected = [captured[n] for n in layers]
    assert len(features) == len(layers)
    for got, want in zip(features, expected, strict=True):
        assert torch.equal(got, want)


def test_named_features_share_the_networks_parameters():
    net = _net()
    graph = feature_network(net, ("layer2",))
    ours = dict(net.named_parameters())
    for name, param in graph.graph_module.named_parameters():
        assert param is ours[name]


def test_bad_layers_are_refused_with_what_to_give():
    net = _net()
    with pytest.raises(ValueError, match=r"mix indices and names"):
        feature_network(net, (1, "layer2"))
    with pytest.raises(
        ValueError,
        match=r"has no submodule\(s\) \['layer9'\]: feature layers must be submodule names "
        r"such as",
    ):
        feature_network(net, ("layer9",))
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    with pytest.raises(
        TypeError,
        match=r"Sequential has no forward_intermediates .* give its feature layers as "
        r"submodule names",
    ):
        feature_network(plain, (0,))


@pytest.mark.parametrize("fold", [False, True], ids=["as_is", "folded"])
def test_the_teacher_component_returns_features_from_its_forward_folded_or_not(fold):
    teacher = _net("resnet20", seed=1)
    module = DistillationModule(_net(), teacher, KD(), feature_loss=AT(), fold_teacher_bn=fold)
    x = torch.randn(2, 3, 32, 32)
    out = module.teacher_component.outputs(x)
    with torch.no_grad():
        expected = teacher.forward_intermediates(x)
    assert len(out.features) == 3
    for got, index in zip(out.features, (1, 2, 3), strict=True):
        torch.testing.assert_close(got, expected[index], rtol=1e-4, atol=1e-4)  # folding: float32 rounding
    torch.testing.assert_close(out.logits, teacher(x), rtol=1e-4, atol=1e-5)
    if fold:  # the folded copy computes them: no BatchNorm left in it
        net = module.teacher_component.feature_forward()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def _fit_module(feature_loss, tmp_path=None, fold=True, epochs=1) -> tuple[DistillationModule, Trainer]:
    seed_everything(0)
    module = DistillationModule(
        _net(seed=3).train(),
        _net("resnet20", seed=1),
        KD(temperature=2.0, kd_weight=9.0, standardize=True),
        feature_loss=feature_loss,
        fold_teacher_bn=fold,
        lr_scheduler=None,
    )
    train, val = separable_loaders(n=32, num_classes=4, batch_size=8)
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=tmp_path is not None,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(module, train, val)
    return module, trainer


def test_a_fit_with_a_feature_loss_runs_each_network_once_per_step_and_logs_the_terms(tmp_path):
    calls = {"student": 0, "teacher": 0}
    feature_loss = FitNet(student_channels=32, teacher_channels=32, student_layers=(2,), teacher_layers=(2,))
    seed_everything(0)
    module = DistillationModule(
        _net(seed=3), _net("resnet20", seed=1), KD(), feature_loss=feature_loss, lr_scheduler=None
    )
    module.student.conv1.register_forward_hook(lambda *_: calls.__setitem__("student", calls["student"] + 1))
    module.teacher.conv1.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    train, _ = separable_loaders(n=32, num_classes=4, batch_size=8)
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    before = feature_loss.regressors[0].weight.detach().clone()
    trainer.fit(module, train)
    assert calls == {"student": 4, "teacher": 4}  # 4 steps: one forward each, logits and features together
    assert not torch.equal(before, feature_loss.regressors[0].weight)  # the adapter learned
    metrics = trainer.callback_metrics
    assert {"train/ce_epoch", "train/kd_epoch", "train/hint_epoch"} <= set(metrics)
    parts = sum(float(metrics[f"train/{t}_epoch"]) for t in ("ce", "kd", "hint"))
    assert float(metrics["train/loss_epoch"]) == pytest.approx(parts, rel=1e-5)


def test_adapters_are_in_the_optimizer_and_the_checkpoint_not_in_the_export(tmp_path):
    from lightning_kd.apps import export

    feature_loss = LocalityGuidance(
        student_channels=(16, 32), teacher_channels=(16, 32), student_layers=(1, 2), teacher_layers=(1, 2)
    )
    module, trainer = _fit_module(feature_loss, tmp_path=tmp_path)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in feature_loss.parameters())
    ckpt = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    saved = torch.load(ckpt, weights_only=True)
    adapter_keys = {k for k in saved["state_dict"] if k.startswith("feature_loss.")}
    assert adapter_keys == {f"feature_loss.{k}" for k in feature_loss.state_dict()}
    assert saved["hyper_parameters"]["feature_loss.class_path"] == "lightning_kd.losses.features.LocalityGuidance"

    reloaded = DistillationModule.load_from_checkpoint(ckpt, student=_net(seed=9), teacher=_net("resnet20", seed=1))
    assert isinstance(reloaded.feature_loss, LocalityGuidance)
    for key, value in feature_loss.state_dict().items():
        assert torch.equal(reloaded.feature_loss.state_dict()[key], value), key

    out = tmp_path / "student.pt"
    assert export.main([ckpt, str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert set(exported) == set(module.student.state_dict())


@pytest.mark.parametrize(
    "feature_loss",
    [
        pytest.param(lambda: AT(), id="at_indices"),
        pytest.param(
            lambda: AT(student_layers=("layer1", "layer3"), teacher_layers=("layer1", "layer3")), id="at_names"
        ),
        pytest.param(
            lambda: LocalityGuidance(transform="attention", student_layers=(1, 2, 3)), id="guidance_attention"
        ),
    ],
)
def test_feature_losses_train_with_the_folded_teacher(feature_loss):
    module, trainer = _fit_module(feature_loss(), fold=True)
    term = module.feature_loss.term
    assert torch.isfinite(trainer.callback_metrics[f"train/{term}_epoch"])
    assert float(trainer.callback_metrics[f"train/{term}_epoch"]) > 0


def test_feature_losses_that_cannot_be_served_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"teacher_cache holds the teacher's logits only"):
        DistillationModule(
            "resnet8", "resnet8", KD(), num_classes=4, feature_loss=AT(), teacher_cache=str(tmp_path / "c.npy")
        )
    with pytest.raises(ValueError, match=r"MLKD takes 2 views of each image"):
        DistillationModule("resnet8", "resnet8", MLKD(), num_classes=4, feature_loss=AT())
    with pytest.raises(ValueError, match=r"2 teachers were given: distil features from a single teacher"):
        DistillationModule("resnet8", ["resnet8", "resnet8"], KD(), num_classes=4, feature_loss=AT())
    with pytest.raises(TypeError, match=r"feature_loss must be a FeatureLoss"):
        DistillationModule("resnet8", "resnet8", KD(), num_classes=4, feature_loss=KD())


def test_ddp_on_two_processes_keeps_the_adapters_and_the_student_in_step(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import ddp_features

    result = subprocess.run(
        [sys.executable, ddp_features.__file__, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == 2  # 32 samples, batch 8, two processes
    assert ranks[0] == ranks[1]  # the adapters' gradients are averaged like the student's


def test_a_feature_loss_from_the_command_line(tmp_path, monkeypatch):
    from pathlib import Path

    from lightning_kd.cli import main

    monkeypatch.chdir(tmp_path)
    teacher = tmp_path / "teacher.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), teacher)
    repo = Path(__file__).resolve().parents[1]
    args = ["fit", "--config", str(repo / "configs/demo/kd.yaml"), "--trainer.max_epochs=1"]
    args += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.init_args.image_size=16"]
    args += [f"--model.init_args.teacher_weights={teacher}", "--model.init_args.feature_loss=lightning_kd.losses.AT"]
    assert main(args) == 0
    saved = torch.load(tmp_path / "runs/demo/kd/latest/checkpoints/last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["feature_loss.class_path"] == "lightning_kd.losses.features.AT"
    assert saved["hyper_parameters"]["feature_loss.student_layers"] == [1, 2, 3]
