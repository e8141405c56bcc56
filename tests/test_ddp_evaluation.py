"""Evaluation under DDP counts every sample once: 2 gloo processes log what one process logs.

An odd validation split (361 digits: 181 + 180 per process, neither a multiple of the batch of 48) is evaluated by
``fit``, ``validate`` and ``test`` on 2 CPU processes (``tests/helpers/ddp_eval.py``) and by one process here.
Every epoch-level ``val/*``, ``test/*``, ``teacher/val_acc1`` and ``logits/*`` value must agree, and the run must
not print Lightning's "use sync_dist=True" warning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_kd.callbacks import LogitStatistics
from lightning_kd.models import create_model
from tests.helpers import ddp_eval

ROOT = Path(__file__).resolve().parents[1]
VAL_FRACTION = 0.2005  # 361 validation images


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict], str]:
    out = tmp_path_factory.mktemp("ddp_eval")
    torch.manual_seed(1)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), out / "teacher.pt")
    torch.save(create_model("resnet8", num_classes=10).state_dict(), out / "student.pt")
    result = subprocess.run(
        [
            sys.executable,
            str(Path(ddp_eval.__file__)),
            str(out),
            str(out / "teacher.pt"),
            str(out / "student.pt"),
            str(VAL_FRACTION),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((out / f"eval_rank{rank}.json").read_text()) for rank in (0, 1)]
    return out, ranks, result.stdout + result.stderr


def _single_process(out: Path, student: str) -> dict[str, dict[str, float]]:
    """validate and test of ``student`` (a file in ``out``) with one process on the whole split."""
    module = ddp_eval.make_module(str(out / "teacher.pt"), str(out / student))
    trainer = ddp_eval.make_trainer(1, "auto", [LogitStatistics(histogram_samples=0)])
    data = ddp_eval.make_data(VAL_FRACTION)
    trainer.validate(module, data, verbose=False)
    validate = ddp_eval.epoch_metrics(trainer)
    trainer.test(module, data, verbose=False)
    return {"validate": validate, "test": ddp_eval.epoch_metrics(trainer), "n": len(data.val_set)}


def _assert_same(logged: dict[str, float], reference: dict[str, float], keys: list[str]) -> None:
    for key in keys:
        assert key in logged, key
        assert key in reference, key
        # The two runs batch the samples differently (48 of one process's share vs 48 in a row), and fp32
        # convolutions round a sample's logits slightly differently with the batch. The spreads come from a sum of
        # squares minus the squared mean, which magnifies those last bits (measured: 4e-6 relative); a counting
        # error would move any value by about 1/361 = 3e-3.
        rel = 2e-5 if key.endswith("_spread") else 1e-6
        assert logged[key] == pytest.approx(reference[key], rel=rel, abs=1e-7), key


def test_the_split_is_odd_and_ranks_end_with_partial_batches():
    data = ddp_eval.make_data(VAL_FRACTION)
    data.setup("validate")
    n = len(data.val_set)
    assert n == 361
    assert (n // 2) % ddp_eval.VAL_BATCH_SIZE != 0
    assert (n // 2 + 1) % ddp_eval.VAL_BATCH_SIZE != 0


def test_no_sync_dist_warning(run):
    _, ranks, output = run
    assert [r["world_size"] for r in ranks] == [2, 2]
    # the run did log what used to warn: train epoch means, the best-so-far, the teacher, the logit statistics
    assert {"train/loss_epoch", "train/acc1", "val/acc1_best", "teacher/val_acc1", "logits/agreement"} <= set(
        ranks[0]["fit"]
    )
    assert "sync_dist" not in output


def test_validate_and_test_equal_one_process(run):
    out, ranks, _ = run
    reference = _single_process(out, "student.pt")
    # accuracies are counts over 361: a repeated or dropped sample would move them by at least 1/362
    assert 0 < reference["validate"]["val/acc1"] < 1
    val_keys = ["val/acc1", "val/acc5", "val/loss", "teacher/val_acc1"]
    val_keys += sorted(k for k in reference["validate"] if k.startswith("logits/"))
    assert len(val_keys) == 4 + 13  # 6 statistics per role, agreement
    for rank in ranks:
        _assert_same(rank["validate"], reference["validate"], val_keys)
        _assert_same(rank["test"], reference["test"], ["test/acc1", "test/acc5", "test/loss"])


def test_fit_validation_equals_one_process(run):
    out, ranks, _ = run
    reference = _single_process(out, "student_fit.pt")["validate"]
    keys = ["val/acc1", "val/acc5", "val/loss", "teacher/val_acc1"]
    keys += sorted(k for k in reference if k.startswith("logits/"))
    for rank in ranks:
        _assert_same(rank["fit"], reference, keys)
        assert rank["fit"]["val/acc1_best"] == rank["fit"]["val/acc1"]
    # the training epoch means are summed over both processes: identical on both
    assert ranks[0]["fit"]["train/loss_epoch"] == ranks[1]["fit"]["train/loss_epoch"]
