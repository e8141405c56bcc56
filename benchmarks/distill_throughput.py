"""Training throughput of distillation against training the student alone, in the same process.

Runs real Lightning ``fit`` loops on synthetic CIFAR-shaped batches (no data loading cost) and prints images per
second for each setting and the ratio ``distillation / student alone``. The distillation step adds a teacher
forward (no backward) and the loss; the ratio says what that costs. Optional settings: mixed precision and
``torch.compile`` of the networks (compared against the same run without it).

Examples::

    python benchmarks/distill_throughput.py                                   # CPU, small
    python benchmarks/distill_throughput.py --accelerator gpu --precision bf16-mixed 16-mixed 32-true \
        --student resnet8x4 --teacher resnet32x4 --batch-size 64 256 --steps 60 --compile
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, Dataset

from lightning_kd import ClassificationModule, DistillationModule
from lightning_kd.losses import KD
from lightning_kd.models import create_model


class _SyntheticCifar(Dataset):
    def __init__(self, n: int, num_classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class _StepTimer(Callback):
    """Wall time of the training steps after ``warmup`` steps (synchronising the GPU at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1
            self._sync()
            self.end = time.perf_counter()


def _compile(module: torch.nn.Module) -> None:
    for name in ("student", "teacher", "model"):
        if hasattr(module, name):
            setattr(module, name, torch.compile(getattr(module, name)))


def measure(args: argparse.Namespace, distill: bool, precision: str, batch_size: int, compile_: bool) -> float:
    """Images per second of one ``fit`` run."""
    torch.manual_seed(0)
    student = create_model(args.student, num_classes=100)
    if distill:
        teacher = create_model(args.teacher, num_classes=100)
        module = DistillationModule(student, teacher, KD(temperature=2.0, kd_weight=9.0, standardize=True))
    else:
        module = ClassificationModule(student)
    if compile_:
        _compile(module)
    total = args.warmup + args.steps
    loader = DataLoader(_SyntheticCifar(batch_size * total, 100), batch_size=batch_size, shuffle=False)
    timer = _StepTimer(args.warmup)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=precision,
        max_steps=total,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, loader)
    if timer.start is None or timer.end is None or timer.steps == 0:
        raise RuntimeError("no timed steps: raise --steps")
    return timer.steps * batch_size / (timer.end - timer.start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["32-true"])
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd networks")
    args = parser.parse_args(argv)

    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else "cpu"
    print(f"# {args.teacher} -> {args.student}, KD+LS, synthetic 32x32 batches, {device}, torch {torch.__version__}")
    print("| precision | batch | compiled | student alone (img/s) | distillation (img/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for precision in args.precision:
        for batch_size in args.batch_size:
            for compile_ in [False, True] if args.compile else [False]:
                alone = measure(args, False, precision, batch_size, compile_)
                distill = measure(args, True, precision, batch_size, compile_)
                row = [precision, batch_size, compile_, f"{alone:.0f}", f"{distill:.0f}", f"{distill / alone:.3f}"]
                print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
