"""One training step of the ViT table's KD+LS run on this machine, and what a run of the table costs.

The step of ``configs/cifar100/vit/deit_tiny_kd_ls.yaml`` as plain PyTorch: the batch (224 px) resized to 32 px for
the frozen ``resnet56_pycls`` teacher (bilinear, under ``no_grad``), the ``deit_tiny_distilled`` student's two
heads, ``TokenKD(temperature=3, kd_weight=9, ce_weight=0, standardize=True)``, backward, and the
``SelectiveDecayAdamW`` update (lr 5e-4, weight decay 0.05). Reported:

1. the step's wall and process-CPU time and its rate in images per second, at ``--batch-size`` (8), after
   ``--warmup`` untimed steps: the fastest of ``--rounds`` rounds of ``--steps`` steps (and the median: on a
   machine with other load the two differ);
2. the floating-point operations of one step, counted by ``torch.utils.flop_counter`` (student forward and
   backward, teacher forward), per image;
3. the per-image rate of the training augmentation (``CIFAR100DataModule(augmentation="pycls")``'s transform, PIL
   RandAugment at 224 px) in this one process, per second of wall time and of process CPU time: what one
   data-loader worker on such a core delivers;
4. the estimate for one 300-epoch run (50,000 training images per epoch; validation not counted): CPU hours at the
   measured rate, and GPU hours from the counted operations at an assumed sustained fraction of a GPU's peak
   (``--gpu-tflops`` x ``--utilization``, stated in the output). No GPU was measured: the GPU figure is arithmetic,
   not a measurement.

    python benchmarks/vit_step.py                       # batch 8, 2 warm-up steps, 5 rounds of 2 steps
    python benchmarks/vit_step.py --batch-size 8 --threads 2 --rounds 5   # two torch threads
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning_kd.data.transforms import pycls_train_transform  # noqa: E402
from lightning_kd.losses import TokenKD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from lightning_kd.optim import SelectiveDecayAdamW  # noqa: E402

EPOCHS, TRAIN_IMAGES, CLASSES = 300, 50_000, 100


def _machine() -> str:
    load = f"; load average {os.getloadavg()[0]:.1f} over {os.cpu_count()} CPUs" if hasattr(os, "getloadavg") else ""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        name = models[0] if models else name
    return f"{name}, {torch.get_num_threads()} torch threads; torch {torch.__version__}{load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two threads stall in OpenMP barriers whenever "
        "another process holds a core, measured 8 s per step against 0.55 s with one)",
    )
    parser.add_argument("--gpu-tflops", type=float, default=67.0, help="the GPU's fp32 peak (H100 SXM: 67)")
    parser.add_argument("--utilization", type=float, default=0.3, help="assumed sustained fraction of that peak")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    student = create_model("deit_tiny_distilled", num_classes=CLASSES).train()
    teacher = create_model("resnet56_pycls", num_classes=CLASSES).eval().requires_grad_(False)
    loss_fn = TokenKD(temperature=3.0, kd_weight=9.0, ce_weight=0.0, standardize=True)
    optimizer = SelectiveDecayAdamW(student.parameters(), lr=5e-4, weight_decay=0.05)
    images = torch.randn(args.batch_size, 3, 224, 224)
    targets = torch.randint(0, CLASSES, (args.batch_size,))

    def step() -> None:
        with torch.no_grad():
            teacher_logits = teacher(F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False))
        terms = loss_fn(student.forward_heads(images), teacher_logits, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    walls, cpus = [], []
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        walls.append((time.perf_counter() - wall) / args.steps)
        cpus.append((time.process_time() - cpu) / args.steps)
    # the fastest round is the step's cost; slower ones measure other load on the machine
    wall, cpu, median = min(walls), min(cpus), statistics.median(walls)

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_image = counter.get_total_flops() / args.batch_size

    transform = pycls_train_transform(224)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(128)]
    # as in a data-loader worker: one torch thread; the same op draws on every run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    for picture in pictures[:16]:  # warm-up (first calls build lookup tables)
        transform(picture)
    start, start_cpu = time.perf_counter(), time.process_time()
    for picture in pictures:
        transform(picture)
    augment_rate = len(pictures) / (time.perf_counter() - start)
    augment_cpu_rate = len(pictures) / (time.process_time() - start_cpu)
    torch.set_num_threads(threads)

    run_images = EPOCHS * TRAIN_IMAGES
    rate = args.batch_size / wall
    gpu_seconds = run_images * flops_per_image / (args.gpu_tflops * 1e12 * args.utilization)
    print(f"machine: {_machine()}")
    print(
        f"step (batch {args.batch_size}, 224 px student, 32 px teacher): {1e3 * wall:.0f} ms wall (fastest round; "
        f"median {1e3 * median:.0f} ms), {1e3 * cpu:.0f} ms process CPU; {rate:.2f} img/s"
    )
    print(f"operations per image (student fwd+bwd, teacher fwd): {flops_per_image / 1e9:.2f} GFLOP")
    print(
        f"training augmentation (PIL, one process): {augment_rate:.0f} img/s wall, "
        f"{augment_cpu_rate:.0f} img/s per second of process CPU"
    )
    print(f"one run ({EPOCHS} epochs x {TRAIN_IMAGES:,} images, validation not counted):")
    print(f"  this CPU at the measured rate: {run_images / rate / 3600:,.0f} h")
    print(
        f"  a GPU sustaining {args.utilization:.0%} of {args.gpu_tflops:g} TFLOP/s fp32 (an assumption, not a "
        f"measurement): {gpu_seconds / 3600:.1f} h"
    )
    gpu_rate = run_images / gpu_seconds
    workers = gpu_rate / augment_cpu_rate
    print(f"  data-loader workers of this CPU's speed to feed that GPU's {gpu_rate:,.0f} img/s: {workers:.0f}")


if __name__ == "__main__":
    main()
