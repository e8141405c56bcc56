"""Mixed-precision check on an accelerator: the distillation loss stays fp32 and finite, the teacher stays frozen.

Trains resnet32x4 -> resnet8x4 (KD + LS) for a few steps under each precision and prints, per precision, the
dtype of the student logits, the dtype of every loss term, whether every loss was finite, whether the teacher's
weights and BN buffers are bit-identical afterwards, and whether the student changed.

    python benchmarks/amp_check.py --accelerator gpu --precision 16-mixed bf16-mixed 32-true
"""

from __future__ import annotations

import argparse
import copy

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_kd import DistillationModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model


def check(accelerator: str, precision: str, steps: int) -> dict[str, object]:
    torch.manual_seed(0)
    module = DistillationModule(
        create_model("resnet8x4", num_classes=100),
        create_model("resnet32x4", num_classes=100),
        KD(temperature=2.0, kd_weight=9.0, standardize=True),
    )
    teacher_before = copy.deepcopy(module.teacher.state_dict())
    student_before = copy.deepcopy(module.student.state_dict())
    seen: dict[str, set] = {"logits": set(), "terms": set(), "finite": set()}

    def record(loss_module, inputs, outputs):
        seen["logits"].add(str(inputs[0].dtype))
        seen["terms"].update(str(v.dtype) for v in outputs.values())
        seen["finite"].add(bool(torch.stack([v.detach() for v in outputs.values()]).isfinite().all()))

    module.loss.register_forward_hook(record)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64 * steps, 3, 32, 32, generator=g), torch.randint(0, 100, (64 * steps,)))
    trainer = Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=64))
    teacher_after = {k: v.cpu() for k, v in module.teacher.state_dict().items()}
    student_after = {k: v.cpu() for k, v in module.student.state_dict().items()}
    return {
        "student logits": sorted(seen["logits"]),
        "loss terms": sorted(seen["terms"]),
        "all finite": all(seen["finite"]),
        "teacher unchanged": all(torch.equal(teacher_after[k], v) for k, v in teacher_before.items()),
        "teacher in eval": not any(m.training for m in module.teacher.modules()),
        "student changed": any(not torch.equal(student_after[k], v) for k, v in student_before.items()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    for precision in args.precision:
        print(precision, check(args.accelerator, precision, args.steps), flush=True)


if __name__ == "__main__":
    main()
