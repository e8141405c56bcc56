"""BatchNorm folding for the frozen teacher: ``fold_batchnorm`` on the whole zoo and ``fold_teacher_bn`` in a fit."""

from __future__ import annotations

import collections
import copy
import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from lightning_kd import DistillationModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model, list_models
from lightning_kd.models.fold import count_batchnorms, fold_batchnorm
from tests.helpers.dispatch import OpCounter
from tests.helpers.tiny import TinyNet, separable_loaders


def _randomize_batchnorms(network: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return network


def _max_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("name", list_models())
def test_fold_batchnorm_gives_the_same_logits_for_every_zoo_model(name):
    torch.manual_seed(0)
    model = _randomize_batchnorms(create_model(name, num_classes=100)).eval()
    before = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_relative_error(model(x), folded(x)) < 1e-5
    # WRN's blocks are pre-activation (BatchNorm before the convolution): only those after a convolution fold
    left = count_batchnorms(folded)
    assert left < count_batchnorms(model)
    if not name.startswith("wrn"):
        assert left == 0
    assert not folded.training
    assert not any(p.requires_grad for p in folded.parameters())
    after = model.state_dict()  # the original is untouched
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_vgg_still_pools_before_the_last_block_on_64px_inputs_once_traced():
    torch.manual_seed(0)
    model = _randomize_batchnorms(create_model("vgg8", num_classes=10)).eval()
    folded = fold_batchnorm(model)
    with torch.no_grad():
        for size in (32, 64):
            x = torch.randn(2, 3, size, size)
            assert _max_relative_error(model(x), folded(x)) < 1e-5


def _ops(network: nn.Module, x: torch.Tensor) -> collections.Counter[str]:
    with torch.no_grad(), OpCounter() as counter:
        network(x)
    return counter.counts


def test_folded_teacher_dispatches_no_batchnorm_and_fewer_ops():
    teacher = create_model("resnet32x4", num_classes=100).eval()
    x = torch.randn(1, 3, 32, 32)
    plain, folded = _ops(teacher, x), _ops(fold_batchnorm(teacher), x)
    assert sum(n for op, n in plain.items() if "batch_norm" in op) == 34
    assert not any("batch_norm" in op for op in folded)
    assert folded["convolution"] == plain["convolution"]
    assert sum(folded.values()) <= sum(plain.values()) - 34


def test_fold_keeps_dtype_memory_format_and_device():
    model = _randomize_batchnorms(create_model("resnet8", num_classes=10)).eval()
    model = model.to(dtype=torch.float64, memory_format=torch.channels_last)
    folded = fold_batchnorm(model)
    conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.dtype == torch.float64
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert _max_relative_error(model(x), folded(x)) < 1e-5  # folded in float32, then cast back


class _ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if x.sum() > 0 else -x  # branches on a value: not traceable


def test_an_untraceable_network_is_a_clear_error():
    with pytest.raises(ValueError, match=r"_ValueBranch.*fold_teacher_bn to false"):
        fold_batchnorm(_ValueBranch().eval())


# --- the module option ---------------------------------------------------------------------------------------


class _Probe(Callback):
    """The network the module runs as its teacher, at every training batch."""

    def __init__(self) -> None:
        self.networks: list[nn.Module] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.networks.append(pl_module.teacher_network())


def _fit(tmp_path: Path, fold: bool) -> tuple[DistillationModule, list[dict[str, str]], _Probe]:
    seed_everything(0)
    teacher = _randomize_batchnorms(TinyNet(width=16), seed=1)
    module = DistillationModule(
        TinyNet(),
        teacher,
        KD(temperature=2.0, kd_weight=9.0, standardize=True),
        lr_scheduler=None,
        fold_teacher_bn=fold,
    )
    train, val = separable_loaders(n=64, batch_size=16)
    probe = _Probe()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=CSVLogger(tmp_path, name="logs", version=0),
        callbacks=[probe],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, train, val)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        return module, list(csv.DictReader(f)), probe


def _column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name)]


def test_fit_with_a_folded_teacher_follows_the_unfolded_run(tmp_path):
    folded, folded_rows, probe = _fit(tmp_path / "folded", fold=True)
    plain, plain_rows, _ = _fit(tmp_path / "plain", fold=False)
    for name in ("train/loss_step", "train/kd_step", "val/acc1", "teacher/val_acc1"):
        assert _column(folded_rows, name) == pytest.approx(_column(plain_rows, name), rel=1e-4), name
    for key, value in plain.student.state_dict().items():
        torch.testing.assert_close(folded.student.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    # one folded copy for the whole fit, and never part of the module's state or record of networks
    assert len({id(n) for n in probe.networks}) == 1
    assert probe.networks[0] is not folded.teacher
    assert count_batchnorms(probe.networks[0]) == 0
    assert folded.state_dict().keys() == plain.state_dict().keys()
    assert folded.hparams["fold_teacher_bn"] is True
    assert plain.hparams["fold_teacher_bn"] is False
    assert plain.teacher_network() is plain.teacher


def test_validate_rebuilds_the_folded_copy_from_the_current_teacher_weights(tmp_path):
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=4.0), fold_teacher_bn=True)
    _, val = separable_loaders(n=32, batch_size=16)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    x = torch.randn(4, 3, 8, 8)
    trainer.validate(module, val)
    first = module.teacher_network()
    _randomize_batchnorms(module.teacher, seed=3)  # e.g. other teacher weights loaded between runs
    with torch.no_grad():
        assert _max_relative_error(module.teacher(x), first(x)) > 1e-3  # the old copy is stale
        trainer.validate(module, val)
        assert _max_relative_error(module.teacher(x), module.teacher_network()(x)) < 1e-5


def test_fold_teacher_bn_has_no_effect_under_fsdp_and_says_so():
    # Lightning 2.6 builds an FSDP Trainer only on CUDA; the check reads the strategy alone
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=4.0), fold_teacher_bn=True)
    module.trainer = SimpleNamespace(strategy=FSDPStrategy())
    with pytest.warns(UserWarning, match=r"fold_teacher_bn=True has no effect under FSDPStrategy.*sharded"):
        module.on_test_start()
    assert module.teacher_network() is module.teacher


def test_a_teacher_with_empty_sharded_parameters_is_not_folded():
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=4.0), fold_teacher_bn=True)
    module.trainer = SimpleNamespace(strategy=object())
    module.teacher.conv.weight.data = torch.empty(0)  # what a sharding strategy leaves on a process between gathers
    with pytest.warns(UserWarning, match="sharded"):
        module.on_predict_start()
    assert module.teacher_network() is module.teacher


# --- hooks on the teacher ----------------------------------------------------------------------------------


class _Features:
    """A feature collector whose bound method is the hook: it must see the folded copy's outputs itself."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.outputs.append(output.detach().cpu().numpy())  # not traceable: a proxy has no numpy()


def test_a_forward_hook_on_a_block_fires_on_every_forward_of_the_folded_copy():
    torch.manual_seed(0)
    model = _randomize_batchnorms(create_model("resnet8", num_classes=10)).eval()
    features = _Features()
    handle = model.layer3.register_forward_hook(features.hook)
    folded = fold_batchnorm(model)
    assert features.outputs == []  # tracing ran no hook
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for _ in range(2):
            assert _max_relative_error(expected, folded(x)) < 1e-5
    reference, *on_copy = (torch.from_numpy(o) for o in features.outputs)
    assert len(on_copy) == 2
    for output in on_copy:
        assert _max_relative_error(reference, output) < 1e-5
    assert count_batchnorms(folded) == 0  # the hooked block is folded inside too
    handle.remove()  # the copy shares the hooks: removing one from the teacher removes it from the copy
    with torch.no_grad():
        folded(x)
    assert len(features.outputs) == 3


def test_hooks_that_change_values_and_a_hooked_convolution_give_the_teachers_outputs():
    torch.manual_seed(0)
    model = _randomize_batchnorms(create_model("resnet8", num_classes=10)).eval()
    seen: list[torch.Tensor] = []
    model.layer2.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    model.layer1[0].conv1.register_forward_hook(lambda m, args, out: seen.append(out.clone()))
    model.register_forward_hook(lambda m, args, out: out + 1.0)  # on the teacher itself
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        assert _max_relative_error(expected, folded(x)) < 1e-5
    # the hooked convolution saw its own output, not one with the next BatchNorm folded in
    assert _max_relative_error(seen[0], seen[1]) < 1e-5
    assert count_batchnorms(folded) == 1  # only the BatchNorm after the hooked convolution stays


class _Count(Callback):
    """Counts the teacher's ``fc`` hook calls per stage; hooks ``bn`` too from the second epoch on.

    Alone, the ``fc`` hook leaves ``conv`` -> ``bn`` to be folded: the copy has no ``bn`` until it is made again.
    """

    def __init__(self) -> None:
        self.calls = collections.Counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.teacher.fc.register_forward_hook(lambda *_: self.calls.update([trainer.state.stage.value]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            pl_module.teacher.bn.register_forward_hook(lambda *_: self.calls.update(["bn"]))


@pytest.mark.parametrize("fold", [True, False])
def test_teacher_hooks_fire_in_a_fit_with_fold_teacher_bn_as_without(tmp_path, fold):
    seed_everything(0)
    module = DistillationModule(TinyNet(), TinyNet(width=16), KD(temperature=4.0), fold_teacher_bn=fold)
    count = _Count()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[count],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, *separable_loaders(n=64, batch_size=16))
    # 4 training batches and 4 validation batches per epoch; teacher/val_acc1 runs the teacher at the first one
    assert count.calls["train"] == 8
    assert count.calls["validate"] == 4
    assert count.calls["bn"] == 4  # the second epoch's training batches: the copy was made again at its start
