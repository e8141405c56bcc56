"""WholeStepGraph: capture / re-capture bookkeeping on the CPU (through an injected backend), real graphs on CUDA.

The CPU backend records the step and runs it at replay, and it bakes in the learning rates it saw at capture
(as a real CUDA graph bakes SGD's Python float into its kernels): a missed re-capture then changes the
trajectory, so comparing with an eager loop tests the re-capture logic, not just the plumbing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_kd.step_runners
from lightning_kd import DistillationModule, cuda_graph
from lightning_kd.cuda_graph import GraphBackend, WholeStepGraph, is_supported
from lightning_kd.losses import KD
from tests.helpers.tiny import TinyNet

NUM_CLASSES = 4


class BakedLRBackend(GraphBackend):
    """A CPU stand-in for a CUDA graph: replays run the recorded step with the lrs seen at capture.

    Like a real graph captured with ``param.grad = None``, each replay writes fresh gradients (no accumulation).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.fn: Callable[[], None] | None = None
        self.lrs: list[float] = []

    def capture(self, fn: Callable[[], None]) -> None:
        self.fn = fn  # like a real capture: record, do not run
        self.lrs = [group["lr"] for group in self.optimizer.param_groups]

    def replay(self) -> None:
        live = [group["lr"] for group in self.optimizer.param_groups]
        for group, lr in zip(self.optimizer.param_groups, self.lrs, strict=True):
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        try:
            self.fn()
        finally:
            for group, lr in zip(self.optimizer.param_groups, live, strict=True):
                group["lr"] = lr


class Setup:
    """Student, frozen teacher, KD+LS loss and SGD with momentum; ``step_fn`` is one forward of the step."""

    def __init__(self, seed: int = 0, lr: float = 0.1) -> None:
        torch.manual_seed(seed)
        self.student = TinyNet(NUM_CLASSES)
        self.teacher = TinyNet(NUM_CLASSES).eval().requires_grad_(False)
        self.loss = KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def step_fn(self, inputs: Tensor | tuple[Tensor, ...], targets: Tensor) -> dict[str, Tensor]:
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = self.student(x)
        terms = self.loss(logits, teacher_logits, targets)
        return {"loss": terms["ce"] + terms["kd"], **terms, "correct": (logits.argmax(1) == targets).sum()}

    def eager(self, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        self.optimizer.zero_grad()
        out = self.step_fn(inputs, targets)
        out["loss"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in out.items()}

    def graph(self, **kwargs) -> WholeStepGraph:
        return WholeStepGraph(
            self.step_fn, self.optimizer, graph_factory=lambda: BakedLRBackend(self.optimizer), **kwargs
        )


def batches(n: int = 70, batch_size: int = 16, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    """Fixed batches of 8x8 images; 70 samples give 4 full batches and a partial one of 6."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def twins() -> tuple[Setup, Setup]:
    graphed, eager = Setup(), Setup()
    graphed.student.load_state_dict(eager.student.state_dict())
    graphed.teacher.load_state_dict(eager.teacher.state_dict())
    return graphed, eager


def test_is_supported_only_on_cuda() -> None:
    assert not is_supported("cpu")
    assert not is_supported(torch.device("cpu"))
    assert is_supported("cuda") == torch.cuda.is_available()


def test_default_backend_rejects_a_cpu_batch() -> None:
    setup = Setup()
    graph = WholeStepGraph(setup.step_fn, setup.optimizer)
    x, y = batches()[0]
    with pytest.raises(RuntimeError, match=r"needs CUDA tensors \(got a batch on cpu\)"):
        graph.run(x, y)


def test_trajectory_equals_eager_across_epochs_lr_schedule_and_partial_batches() -> None:
    graphed, eager = twins()
    graph = graphed.graph()
    schedules = [
        torch.optim.lr_scheduler.MultiStepLR(s.optimizer, milestones=[1, 2], gamma=0.1) for s in (graphed, eager)
    ]
    data = batches()
    for _epoch in range(3):
        graph.invalidate()
        for torch_seed, (x, y) in enumerate(data):
            torch.manual_seed(torch_seed)  # dropout draws the same masks in both runs
            got = {k: v.clone() for k, v in graph.run(x, y).items()}
            torch.manual_seed(torch_seed)
            want = eager.eager(x, y)
            assert got.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key], msg=key)
        for schedule in schedules:
            schedule.step()
    for name, value in eager.student.state_dict().items():
        torch.testing.assert_close(graphed.student.state_dict()[name], value, msg=name)
    # epoch 1: 3 warm-up steps, capture at the 4th batch, partial 5th batch eager; epochs 2-3: capture at the
    # first batch (invalidated; the lr changed too), replays, partial batch eager
    assert graph.captures == 3
    assert graph.eager_steps == 3 + 1 + 1 + 1


def test_lr_change_mid_epoch_is_recaptured_without_invalidate() -> None:
    graphed, eager = twins()
    graph = graphed.graph(warmup_steps=1)
    x, y = batches()[0]
    lrs = [0.1, 0.1, 0.1, 0.02, 0.02, 0.5]
    for step, lr in enumerate(lrs):
        for setup in (graphed, eager):
            for group in setup.optimizer.param_groups:
                group["lr"] = lr
        torch.manual_seed(step)
        got = graph.run(x, y)["loss"].clone()
        torch.manual_seed(step)
        torch.testing.assert_close(got, eager.eager(x, y)["loss"])
    # step 0 warm-up; capture at step 1 (0.1); re-capture at 0.02 and at 0.5
    assert graph.captures == 3
    torch.testing.assert_close(graphed.student.fc.weight, eager.student.fc.weight)


def test_capture_waits_for_warmup_and_static_inputs_are_reused() -> None:
    setup = Setup()
    graph = setup.graph(warmup_steps=2)
    data = batches()
    pointers = set()
    for step, (x, y) in enumerate(data[:4]):
        graph.run(x, y)
        assert graph.captured == (step >= 2)
        if graph.captured:
            pointers.add((graph._static_inputs.data_ptr(), graph._static_targets.data_ptr()))
    graph.invalidate()
    assert not graph.captured
    graph.run(*data[0])
    pointers.add((graph._static_inputs.data_ptr(), graph._static_targets.data_ptr()))
    assert graph.captures == 2
    assert len(pointers) == 1  # the same buffers before and after the re-capture


def test_partial_batch_runs_eagerly_and_does_not_replace_the_graph() -> None:
    setup = Setup()
    graph = setup.graph(warmup_steps=0)
    data = batches()
    graph.run(*data[0])
    backend = graph._graph
    out = graph.run(*data[-1])  # 6 samples instead of 16
    assert graph._graph is backend
    assert (graph.captures, graph.eager_steps) == (1, 1)
    assert out["loss"].shape == ()
    graph.run(*data[1])
    assert graph.captures == 1  # back to replays of the same graph


def test_a_partial_batch_right_after_warmup_is_not_captured() -> None:
    setup = Setup()
    graph = setup.graph(warmup_steps=1)
    data = batches()
    graph.run(*data[0])  # warm-up: fixes the graphed shape to the first batch's
    graph.run(*data[-1])
    assert graph.captures == 0
    graph.run(*data[1])
    assert graph.captures == 1
    assert graph._static_inputs.shape[0] == 16


def test_outputs_are_detached_and_hold_every_term() -> None:
    setup = Setup()
    graph = setup.graph(warmup_steps=0)
    out = graph.run(*batches()[0])
    assert set(out) == {"loss", "ce", "kd", "correct"}
    assert not any(value.requires_grad for value in out.values())


def test_channels_last_buffers_and_same_results() -> None:
    graphed, eager = twins()
    graphed.student.to(memory_format=torch.channels_last)
    graph = graphed.graph(warmup_steps=1, channels_last=True)
    for step, (x, y) in enumerate(batches()[:3]):
        torch.manual_seed(step)
        got = graph.run(x, y)["loss"].clone()
        torch.manual_seed(step)
        torch.testing.assert_close(got, eager.eager(x, y)["loss"])
    assert graph._static_inputs.is_contiguous(memory_format=torch.channels_last)


def test_views_are_copied_into_static_buffers() -> None:
    setup = Setup()
    graph = setup.graph(warmup_steps=0)
    x, y = batches()[0]
    graph.run((x, x.flip(-1)), y)
    assert isinstance(graph._static_inputs, tuple)
    assert len(graph._static_inputs) == 2
    torch.testing.assert_close(graph._static_inputs[1], x.flip(-1))


def test_adam_groups_are_made_capturable() -> None:
    net = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    assert not optimizer.param_groups[0]["capturable"]
    WholeStepGraph(lambda x, y: {"loss": net(x).sum()}, optimizer, graph_factory=lambda: BakedLRBackend(optimizer))
    assert optimizer.param_groups[0]["capturable"]


def test_rejects_an_enabled_grad_scaler() -> None:
    setup = Setup()
    with pytest.raises(ValueError, match=r"fp16 mixed precision with a GradScaler.*bf16-mixed"):
        WholeStepGraph(setup.step_fn, setup.optimizer, torch.amp.GradScaler("cpu", enabled=True))
    WholeStepGraph(setup.step_fn, setup.optimizer, torch.amp.GradScaler("cpu", enabled=False))  # disabled: fine


def test_rejects_bad_arguments_and_a_step_without_loss() -> None:
    setup = Setup()
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer, got str"):
        WholeStepGraph(setup.step_fn, "sgd")
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0, got -1"):
        WholeStepGraph(setup.step_fn, setup.optimizer, warmup_steps=-1)
    graph = WholeStepGraph(
        lambda x, y: {"total": setup.student(x).sum()},
        setup.optimizer,
        graph_factory=lambda: BakedLRBackend(setup.optimizer),
    )
    with pytest.raises(KeyError, match="under the key 'loss'; it returned \\['total'\\]"):
        graph.run(*batches()[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a real CUDA graph")
def test_cuda_graph_matches_eager_for_200_steps_across_an_lr_change() -> None:
    device = torch.device("cuda")
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        graphed, eager = twins()
        for setup in (graphed, eager):
            setup.student.dropout.p = 0.0  # the graph-safe generator need not draw eager's numbers
            setup.student.to(device)
            setup.teacher.to(device)
            setup.optimizer = torch.optim.SGD(setup.student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        graph = WholeStepGraph(graphed.step_fn, graphed.optimizer)
        schedules = [torch.optim.lr_scheduler.MultiStepLR(s.optimizer, [2, 4], 0.1) for s in (graphed, eager)]
        g = torch.Generator().manual_seed(3)
        n = 32 * 40 + 8  # 40 full batches and a partial one per epoch
        x = torch.randn(n, 3, 8, 8, generator=g).to(device)
        y = torch.randint(0, NUM_CLASSES, (n,), generator=g).to(device)
        got, want = [], []
        for _epoch in range(5):  # 205 steps; the lr drops at epochs 2 and 4
            graph.invalidate()
            for i in range(0, n, 32):
                got.append(graph.run(x[i : i + 32], y[i : i + 32])["loss"].clone())
                want.append(eager.eager(x[i : i + 32], y[i : i + 32])["loss"])
            for schedule in schedules:
                schedule.step()
        # float reassociation may differ by ~1e-7; a baked-in stale lr (10x off) moves the losses far more
        torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-3, atol=1e-4)
        for name, value in eager.student.state_dict().items():
            torch.testing.assert_close(graphed.student.state_dict()[name], value, rtol=1e-3, atol=1e-4, msg=name)
        assert (graph.captures, graph.eager_steps) == (5, 3 + 5)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _fit(
    tmp_path: Path, name: str, accelerator: str = "gpu", full_batches: int = 66, callbacks: tuple = (), **options
) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """3 epochs of DistillationModule, each ``full_batches`` of 32 and a partial one; lr x0.1 after epochs 1, 2.

    Returns every logged ``train/*`` series (in logging order) and the student's final state.
    """
    torch.manual_seed(0)
    student, teacher = TinyNet(NUM_CLASSES), TinyNet(NUM_CLASSES)
    student.dropout.p = 0.0  # the graph-safe generator need not draw eager's numbers
    module = DistillationModule(
        student,
        teacher,
        KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [1, 2], 0.1),
        **options,
    )
    g = torch.Generator().manual_seed(3)
    n = 32 * full_batches + 8
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g))
    logger = CSVLogger(tmp_path, name=name)
    trainer = Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=3,
        limit_val_batches=0,
        logger=logger,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.fit(module, DataLoader(data, batch_size=32, shuffle=False))
    assert trainer.global_step == 3 * (full_batches + 1)
    series: dict[str, list[float]] = {}
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key.startswith("train/") and value:
                    series.setdefault(key, []).append(float(value))
    return series, {k: v.detach().cpu() for k, v in module.student.state_dict().items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a real CUDA graph")
def test_module_cuda_graph_keeps_the_eager_trajectory(tmp_path: Path) -> None:
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        eager, eager_weights = _fit(tmp_path, "eager")
        graphed, graphed_weights = _fit(tmp_path, "graphed", cuda_graph=True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    _assert_same_run(graphed, graphed_weights, eager, eager_weights)


def _assert_same_run(graphed, graphed_weights, eager, eager_weights) -> None:
    # the same logged names (step windows every 10 steps, epoch means, accuracy) with the same values
    assert graphed.keys() == eager.keys()
    assert {"train/loss_step", "train/loss_epoch", "train/kd_epoch", "train/acc1"} <= eager.keys()
    for key, values in eager.items():
        torch.testing.assert_close(torch.tensor(graphed[key]), torch.tensor(values), rtol=1e-3, atol=1e-4, msg=key)
    for name, value in eager_weights.items():  # BatchNorm statistics included
        torch.testing.assert_close(graphed_weights[name], value, rtol=1e-3, atol=1e-4, msg=name)


class _OptimizerHolder(Callback):
    """Hands the real optimizer (under Lightning's wrappers) to the stand-in graph backends."""

    def __init__(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.optimizer = cuda_graph._unwrap(trainer.optimizers[0])


def test_module_graph_plumbing_keeps_the_eager_run_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's cuda_graph path, run on the CPU through the stand-in backend (lrs baked in at capture).

    Checks what the CUDA test checks (logged names and values, weights, global_step, LR drops, partial batches)
    without a GPU; the real CUDA graph is covered by the CUDA tests above.
    """
    holder = _OptimizerHolder()
    graphs: list[BakedLRBackend] = []

    def stand_in() -> BakedLRBackend:
        graphs.append(BakedLRBackend(holder.optimizer))
        return graphs[-1]

    eager, eager_weights = _fit(tmp_path, "eager", accelerator="cpu", full_batches=9)
    monkeypatch.setattr(lightning_kd.step_runners, "is_supported", lambda device: True)  # the module's CUDA check
    monkeypatch.setattr(cuda_graph, "is_supported", lambda device: True)
    monkeypatch.setattr(cuda_graph, "CUDAGraphBackend", stand_in)
    graphed, graphed_weights = _fit(
        tmp_path, "graphed", accelerator="cpu", full_batches=9, callbacks=(holder,), cuda_graph=True
    )
    assert len(graphs) == 3  # one capture per epoch
    _assert_same_run(graphed, graphed_weights, eager, eager_weights)
