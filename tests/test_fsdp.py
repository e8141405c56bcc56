"""FSDP with a frozen teacher: the teacher is its own unit, never flattened together with trainable weights.

Lightning 2.6 runs FSDP only on CUDA; these tests run the same ``FSDPStrategy`` code on CPU processes (gloo)
through a subclass (``tests/helpers/ddp_fit.py``). What only GPUs can show is listed in docs/scaling.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

from lightning_kd import DistillationModule
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import CTKD, KD
from lightning_kd.models import create_model
from lightning_kd.models.checkpoint import load_weights
from lightning_kd.strategies import FrozenApartPolicy, requires_grad_kinds
from tests.helpers import ddp_fit

ROOT = Path(__file__).resolve().parents[1]


def _module(loss=None) -> DistillationModule:
    torch.manual_seed(0)
    return DistillationModule("resnet8", "resnet14", loss or KD(), num_classes=10, lr_scheduler=None)


def _decisions(policy: FrozenApartPolicy, root: nn.Module) -> set[str]:
    """The modules ``policy`` wraps, visiting the tree as FSDP's recursive wrap does (the root is FSDP's own)."""
    wrapped: set[str] = set()

    def visit(name: str, module: nn.Module) -> int:
        total = sum(p.numel() for p in module.parameters())
        if not policy(module=module, recurse=True, nonwrapped_numel=total):
            return 0
        taken = sum(visit(f"{name}.{child_name}".lstrip("."), child) for child_name, child in module.named_children())
        if name and policy(module=module, recurse=False, nonwrapped_numel=total - taken):
            wrapped.add(name)
            return total
        return taken

    visit("", root)
    return wrapped


def test_policy_takes_the_teacher_whole_and_splits_the_student_by_size():
    module = _module()
    wrapped = _decisions(FrozenApartPolicy(min_num_params=20_000), module)
    assert "teacher" in wrapped
    assert not any(name.startswith("teacher.") for name in wrapped)  # one unit, not one per layer
    assert "student" in wrapped or any(name.startswith("student.") for name in wrapped)
    assert "loss" not in wrapped
    for name in wrapped:
        assert len(requires_grad_kinds(module.get_submodule(name))) == 1, name
    # a student smaller than the threshold is left to the root, which then holds trainable parameters only
    small = _decisions(FrozenApartPolicy(min_num_params=10**9), _module())
    assert small == {"teacher"}


def test_policy_never_wraps_a_mixed_module():
    module = _module()
    module.student.layer1.requires_grad_(False)  # a partly frozen student
    policy = FrozenApartPolicy(min_num_params=1)
    wrapped = _decisions(policy, module)
    assert "student.layer1" in wrapped  # the frozen part is a unit of its own
    assert "student" not in wrapped
    assert not policy(module=module.student, recurse=False, nonwrapped_numel=10**9)


def test_policy_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match="min_num_params must be a positive integer, got 0"):
        FrozenApartPolicy(min_num_params=0)


@pytest.fixture
def process_group():
    """A single-process gloo group, so torch's FSDP wrapping runs in this process."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _units(model: FullyShardedDataParallel) -> dict[str, tuple[set[bool], set[str]]]:
    """Each unit's path -> (its flat parameter's requires_grad, the top-level modules its parameters belong to)."""
    units = {}
    for path, module in model.named_modules():
        if isinstance(module, FullyShardedDataParallel) and module._handle is not None:
            name = path.replace("_fsdp_wrapped_module.", "").replace("_fsdp_wrapped_module", "")
            fqns = [f.replace("_fsdp_wrapped_module.", "") for f in module._handle.flat_param._fqns]
            owners = {name.split(".", 1)[0]} if name else {f.split(".", 1)[0] for f in fqns}
            units[name] = ({module._handle.flat_param.requires_grad}, owners)
    return units


@pytest.mark.usefixtures("process_group")
def test_strict_fsdp_wraps_with_the_policy_and_fails_without_it():
    # use_orig_params=False: a flat parameter with mixed requires_grad is an error, not a silent waste
    with pytest.raises(ValueError, match="uniform `requires_grad`"):
        FullyShardedDataParallel(_module(CTKD()), device_id=torch.device("cpu"), use_orig_params=False)
    model = FullyShardedDataParallel(
        _module(CTKD()),
        auto_wrap_policy=FrozenApartPolicy(min_num_params=20_000),
        device_id=torch.device("cpu"),
        use_orig_params=False,
    )
    units = _units(model)
    assert units["teacher"] == ({False}, {"teacher"})
    for name, (flags, owners) in units.items():
        assert len(owners) == 1, f"unit {name!r} mixes {owners}"
        assert flags == ({False} if owners == {"teacher"} else {True}), name
    assert units[""][1] == {"loss"}  # CTKD's learnable temperature stays in the (trainable) root


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("fsdp")
    torch.manual_seed(1)
    teacher_path = out / "teacher.pt"
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher_path)
    result = subprocess.run(
        [sys.executable, str(Path(ddp_fit.__file__)), str(out), str(teacher_path), "0.2", "fsdp"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, teacher_path


def test_two_process_fsdp_fit_keeps_the_teacher_apart_and_identical(fsdp_run):
    out, teacher_path = fsdp_run
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    teacher = load_weights(create_model("resnet8", num_classes=10), teacher_path)
    assert [r["teacher_sha"] for r in ranks] == [ddp_fit.state_hash(teacher)] * 2
    assert not any(r["teacher_requires_grad"] or r["teacher_training"] for r in ranks)
    for rank in ranks:
        units = rank["fsdp_units"]
        assert "teacher" in units
        for name, params in units.items():
            owners = {p.split(".", 1)[0] for p in params}
            assert len(owners) == 1, f"unit {name!r} mixes {owners}"
    # the sharded student's parameters are the same on both processes, and it trained
    assert ranks[0]["student_params_sha"] == ranks[1]["student_params_sha"]
    assert ranks[0]["student_params_sha"] != ddp_fit.state_hash(
        {
            k: v
            for k, v in create_model("resnet8", num_classes=10).state_dict().items()
            if not k.endswith(ddp_fit.BN_BUFFERS)
        }
    )


def test_two_process_fsdp_metrics_are_synced(fsdp_run):
    out, teacher_path = fsdp_run
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["epochs"] == ranks[1]["epochs"]
    data = DigitsDataModule(batch_size=ddp_fit.BATCH_SIZE, image_size=ddp_fit.IMAGE_SIZE, val_fraction=0.2)
    data.setup("validate")
    images, targets = data.val_set.tensors
    teacher = load_weights(create_model("resnet8", num_classes=10), teacher_path).eval()
    with torch.no_grad():
        correct = int((teacher(images).argmax(1) == targets).sum())
    assert ranks[0]["epochs"][0]["teacher/val_acc1"] == pytest.approx(correct / len(targets), abs=1e-7)
