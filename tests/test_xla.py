"""The XLA / TPU path: no device-specific calls or host syncs in training code, and a real run on torch-xla.

The static checks run everywhere. The run needs torch-xla, which is not a dependency of this package (its wheels
pin their own torch): it runs where ``import torch_xla`` works, on torch-xla's CPU backend (``PJRT_DEVICE=CPU``)
unless ``PJRT_DEVICE`` says otherwise, e.g. in the separate environment described in docs/scaling.md::

    PJRT_DEVICE=CPU PYTHONPATH=. /tmp/xla-venv/bin/python -m pytest tests/test_xla.py
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_kd import DistillationModule
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import KD

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_kd"
# the code a training step runs: module, shared system, teacher, step runners, views, statistics, losses
STEP_CODE = [
    *(PACKAGE / name for name in ("module.py", "_system.py", "teacher.py", "step_runners.py", "_views.py")),
    *(PACKAGE / name for name in ("_memory_format.py", "_train_stats.py")),
    PACKAGE / "models/ensemble.py",
    *PACKAGE.glob("losses/*.py"),
]
# calls that copy a tensor to the host (a sync, and on XLA a graph cut) or name a device kind
HOST_SYNCS = {"item", "cpu", "numpy"}
# the one module that is CUDA-specific by design (whole-step CUDA graphs), and checks the device type first
CUDA_ONLY = {PACKAGE / "cuda_graph.py"}


def _calls(tree: ast.AST) -> list[tuple[ast.Call, str]]:
    return [
        (node, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _in_raising_branch(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` sits in an ``if`` branch that raises (an error report may read values)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and any(isinstance(n, ast.Raise) for s in node.body for n in ast.walk(s)):
            return True
    return False


def test_step_code_exists():
    assert all(path.is_file() for path in STEP_CODE)
    assert len(STEP_CODE) >= 5


@pytest.mark.parametrize("path", STEP_CODE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_host_sync_in_training_step_code(path):
    tree = ast.parse(path.read_text())
    parents = _parents(tree)
    bad = [
        f"{path.name}:{call.lineno} .{name}()"
        for call, name in _calls(tree)
        if name in HOST_SYNCS or (name == "tolist" and not _in_raising_branch(call, parents))
    ]
    assert not bad, f"host syncs in training-step code (use tensors, or sync once per log window): {bad}"


def test_no_device_specific_calls_in_the_package():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for call, name in _calls(tree):
            if name == "cuda":
                bad.append(f"{path.name}:{call.lineno} .cuda()")
            if path not in CUDA_ONLY and name == "to":
                literals = [a.value for a in call.args if isinstance(a, ast.Constant)]
                if any(isinstance(v, str) and v.startswith("cuda") for v in literals):
                    bad.append(f"{path.name}:{call.lineno} .to({literals[0]!r})")
    assert not bad, f"device-specific calls (use self.device / tensor.to(other) / register_buffer): {bad}"


# ---------------------------------------------------------------- a real run on an XLA device


class _StepCounters(Callback):
    """Per training step: how many graphs torch-xla compiled and how many tensor values it copied to the host."""

    def __init__(self) -> None:
        self.per_step: list[tuple[int, int]] = []
        self._start = (0, 0)

    @staticmethod
    def _now() -> tuple[int, int]:
        import torch_xla.debug.metrics as met

        compiles = met.metric_data("CompileTime")
        return (compiles[0] if compiles else 0, met.counter_value("aten::_local_scalar_dense") or 0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = self._now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = self._now()
        self.per_step.append((end[0] - self._start[0], end[1] - self._start[1]))


def _fit(accelerator, steps: int) -> tuple[dict[str, float], _StepCounters]:
    seed_everything(0)
    data = DigitsDataModule(batch_size=32, image_size=8, drop_last=True)  # static shapes: one graph per step kind
    module = DistillationModule(
        "resnet8", "resnet8", KD(temperature=4.0, ce_weight=0.1, kd_weight=0.9), num_classes=10, lr_scheduler=None
    )
    counters = _StepCounters()
    trainer = Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=2,
        log_every_n_steps=50,  # no log window closes inside the run: only the epoch's last step checks
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[counters] if accelerator != "cpu" else [],
    )
    trainer.fit(module, data)
    assert trainer.global_step == steps
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, counters


@pytest.mark.skipif(
    importlib.util.find_spec("torch_xla") is None,
    reason="torch-xla is not installed here (it pins its own torch); run this file in an XLA environment, "
    "see docs/scaling.md",
)
def test_distillation_steps_on_an_xla_device(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", os.environ.get("PJRT_DEVICE", "CPU"))
    from tests.helpers.xla_cpu import CPUXLAAccelerator

    steps = 6
    xla_metrics, counters = _fit(CPUXLAAccelerator(), steps)
    cpu_metrics, _ = _fit("cpu", steps)
    assert len(counters.per_step) == steps
    # steady state (after the first step's argument checks and the optimizer state's first graph, before the
    # epoch's last step, which checks the loss for non-finite values): no new graph, no host copy
    steady = counters.per_step[2:-1]
    assert steady == [(0, 0)] * len(steady), counters.per_step
    for name in ("train/loss_epoch", "train/kd_epoch", "train/ce_epoch", "val/acc1", "teacher/val_acc1"):
        assert torch.isfinite(torch.tensor(xla_metrics[name]))
        assert xla_metrics[name] == pytest.approx(cpu_metrics[name], rel=1e-3, abs=1e-4), name


def test_tpu_overlay_merges_over_a_preset(capsys):
    import yaml

    from lightning_kd.cli import main as cli_main

    root = PACKAGE.parent
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "fit",
                "--config",
                str(root / "configs/demo/kd.yaml"),
                "--config",
                str(root / "configs/tpu.yaml"),
                "--print_config",
            ]
        )
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["accelerator"] == "tpu"
    assert config["trainer"]["precision"] in ("32-true", "16-true", "bf16-true")  # Lightning's XLA precisions
    assert config["data"]["init_args"]["drop_last"] is True
    assert config["data"]["class_path"] == "lightning_kd.data.DigitsDataModule"  # the preset is kept
