"""The module's ``cuda_graph`` option: eager with a notice off CUDA; the graphed step's plumbing under ``fit``.

The real capture needs CUDA (tests/test_cuda_graph.py and benchmarks/gpu_suite.sh run it on a GPU). Here the
graph backend is replaced by one that records the step and replays it eagerly, so the manual-optimization path
(step counting, logging, the epoch's learning-rate schedule, checkpoints) runs on the CPU and must give the same
training trajectory as the ordinary step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

import lightning_kd.step_runners as runners
from lightning_kd import DistillationModule
from lightning_kd.cuda_graph import GraphBackend, WholeStepGraph
from lightning_kd.losses import KD
from tests.helpers.tiny import TinyNet, separable_loaders


class _EagerBackend(GraphBackend):
    """Records the step at capture and runs it at every replay (a CUDA graph's contract, without CUDA).

    A captured backward writes the gradients it allocated at capture; replays rewrite them rather than add to them,
    so the eager replay starts from no gradients.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def capture(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def replay(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.fn()


def _fit(tmp_path, cuda_graph: bool, max_epochs: int = 3, loss=None, schedule: bool = True, **module_options):
    seed_everything(0)
    module = DistillationModule(
        TinyNet(),
        TinyNet(width=16),
        loss or KD(temperature=2.0, kd_weight=9.0, standardize=True),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5) if schedule else None,
        cuda_graph=cuda_graph,
        **module_options,
    )
    module.student.dropout.p = 0.0  # the same random numbers are not drawn in the same order by both paths
    train, val = separable_loaders(n=72, batch_size=16)  # 4 full batches + one of 8: the partial batch runs eagerly
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
    )
    trainer.fit(module, train, val)
    return module, trainer


def test_cuda_graph_on_cpu_runs_eagerly_with_a_notice(tmp_path, caplog):
    with caplog.at_level("INFO"):
        module, trainer = _fit(tmp_path, cuda_graph=True, max_epochs=1)
    assert "cuda_graph=True has no effect on cpu" in caplog.text
    assert module.automatic_optimization
    assert module.hparams["cuda_graph"] is True
    assert trainer.global_step == 5


@pytest.fixture
def graphs(monkeypatch) -> list[WholeStepGraph]:
    """Make the module believe it runs on CUDA and give its graphs the eager backend; the graphs built."""
    built: list[WholeStepGraph] = []

    def graph_with_eager_backend(*args, **kwargs) -> WholeStepGraph:
        optimizer = args[1]
        built.append(WholeStepGraph(*args, graph_factory=lambda: _EagerBackend(optimizer), **kwargs))
        return built[-1]

    monkeypatch.setattr(runners, "is_supported", lambda device: True)
    monkeypatch.setattr(runners, "WholeStepGraph", graph_with_eager_backend)
    return built


def test_graphed_step_matches_the_eager_trajectory_across_lr_changes(tmp_path, graphs, monkeypatch):
    monkeypatch.setattr(runners, "is_supported", lambda device: False)
    eager, eager_trainer = _fit(tmp_path / "eager", cuda_graph=False)
    monkeypatch.setattr(runners, "is_supported", lambda device: True)
    graphed, trainer = _fit(tmp_path / "graphed", cuda_graph=True)

    assert not graphed.automatic_optimization
    assert trainer.global_step == eager_trainer.global_step == 15  # Lightning counted every replayed step
    (graph,) = graphs
    # re-captured at every epoch start (and the lr halves at each epoch end); partial batches and warm-up eager
    assert graph.captures == 3
    assert graph.eager_steps == 3 + 3
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    for key, value in eager.student.state_dict().items():
        assert torch.allclose(graphed.student.state_dict()[key].float(), value.float(), atol=1e-5), key
    for name in ("train/loss_epoch", "train/kd_epoch", "train/acc1", "val/acc1"):
        assert torch.allclose(trainer.logged_metrics[name], eager_trainer.logged_metrics[name], atol=1e-5), name


class _EpochDependentKD(KD):
    epoch_dependent = True


@pytest.mark.parametrize(("loss", "captures"), [(KD(), 1), (_EpochDependentKD(), 3)], ids=["kd", "epoch-dependent"])
def test_graph_is_recaptured_each_epoch_only_for_an_epoch_dependent_loss(tmp_path, graphs, loss, captures):
    _fit(tmp_path, cuda_graph=True, loss=loss, schedule=False)  # constant lr: no re-capture for it
    (graph,) = graphs
    assert graph.captures == captures


def test_graphed_step_with_channels_last_and_a_folded_teacher_keeps_the_eager_trajectory(tmp_path, graphs, monkeypatch):
    monkeypatch.setattr(runners, "is_supported", lambda device: False)
    eager, eager_trainer = _fit(tmp_path / "eager", cuda_graph=False)
    monkeypatch.setattr(runners, "is_supported", lambda device: True)
    graphed, trainer = _fit(tmp_path / "graphed", cuda_graph=True, channels_last=True, fold_teacher_bn=True)

    (graph,) = graphs
    # the module hands the NCHW batch as it comes; copying it into the graph's NHWC buffer converts the layout
    static = graph._static_inputs
    assert static.is_contiguous(memory_format=torch.channels_last)
    assert not static.is_contiguous()
    for key, value in eager.student.state_dict().items():
        assert torch.allclose(graphed.student.state_dict()[key].float(), value.float(), atol=1e-4), key
    for name in ("train/loss_epoch", "train/kd_epoch", "train/acc1", "val/acc1"):
        assert torch.allclose(trainer.logged_metrics[name], eager_trainer.logged_metrics[name], atol=1e-4), name


def test_graphed_step_with_a_feature_loss_keeps_the_eager_trajectory(tmp_path, graphs, monkeypatch):
    """The features (student's and folded teacher's) are computed inside the captured step like the logits."""
    from lightning_kd.losses import AT

    monkeypatch.setattr(runners, "is_supported", lambda device: False)
    eager, eager_trainer = _fit(tmp_path / "eager", cuda_graph=False, feature_loss=AT("bn", "bn"), fold_teacher_bn=True)
    monkeypatch.setattr(runners, "is_supported", lambda device: True)
    graphed, trainer = _fit(tmp_path / "graphed", cuda_graph=True, feature_loss=AT("bn", "bn"), fold_teacher_bn=True)

    (graph,) = graphs
    assert graph.captures == 3
    assert float(trainer.logged_metrics["train/at_epoch"]) > 0
    for key, value in eager.student.state_dict().items():
        assert torch.allclose(graphed.student.state_dict()[key].float(), value.float(), atol=1e-5), key
    for name in ("train/loss_epoch", "train/at_epoch", "train/acc1", "val/acc1"):
        assert torch.allclose(trainer.logged_metrics[name], eager_trainer.logged_metrics[name], atol=1e-5), name
