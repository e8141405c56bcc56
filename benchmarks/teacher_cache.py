"""What the teacher-logit cache saves, on the CPU: step time with the cache against the live (folded) teacher.

In one process, on random-pixel CIFAR-100 files in the on-disk format (``--images`` training images):

1. **Build**: ``lightning-kd cache-teacher``'s function (:func:`lightning_kd.apps.cache_teacher.build_teacher_cache`)
   computes the resnet32x4 teacher's logits for all 162 views of each image; its rate (views per second) is set
   against the rate of the teacher's forward inside a training step (the folded teacher at the training batch).
2. **Step**: the training step of resnet32x4 -> resnet8x4 with KD+LS (``KD(temperature=2, kd_weight=9,
   standardize=True)``, batch 64, SGD): ``training_terms`` (teacher, student forward, loss), backward and the
   optimizer step, for (a) the live teacher run BatchNorm-folded (``fold_teacher_bn=True``) and (b) the cache
   (``teacher_cache=...``: a gather by view key). The two alternate over ``--rounds`` rounds of ``--steps`` steps;
   the medians over rounds are reported with their ratio (target >= 2.5x).
3. **Size**: the bytes of the built file per (image, view), and what the complete CIFAR-100 cache takes.

    python benchmarks/teacher_cache.py                         # 4 images (648 views), 5 rounds of 10 steps
    python benchmarks/teacher_cache.py --images 8 --rounds 7 --steps 20 --threads 2

Timings are process CPU time and wall time; on a machine with other load use the CPU-time column.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.apps.cache_teacher import build_teacher_cache  # noqa: E402
from lightning_kd.data import CIFAR100DataModule  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from lightning_kd.teacher_cache import TeacherLogitCache  # noqa: E402
from tests.helpers.fake_data import write_fake_cifar100  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
CIFAR_IMAGES, VIEWS, CLASSES = 50_000, 162, 100


def _module(teacher_file: str, **kwargs: object) -> DistillationModule:
    torch.manual_seed(0)
    loss = KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)
    return DistillationModule(
        STUDENT, TEACHER, loss, num_classes=CLASSES, teacher_weights=teacher_file, lr_scheduler=None, **kwargs
    )


def _timed(fn, repeat: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of ``fn`` over ``repeat`` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.process_time() - cpu) / repeat, (time.perf_counter() - wall) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="training images of the fake data (162 views each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--channels-last", action="store_true", help="both networks and the inputs in NHWC (channels_last=True)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Loading CIFAR-100 from .* without verifying md5")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_cifar100(Path(tmp) / "data", n_train=args.images, n_test=10)
        teacher_file = str(Path(tmp) / "teacher.pth")
        torch.manual_seed(1)
        torch.save({"model": create_model(TEACHER, CLASSES).state_dict()}, teacher_file)
        data = CIFAR100DataModule(
            str(root),
            batch_size=args.batch_size,
            num_workers=0,
            verify_checksums=False,
            device_augment=True,
            view_keys=True,
        )

        start_cpu, start = time.process_time(), time.perf_counter()
        path = build_teacher_cache(_module(teacher_file), data, Path(tmp) / "cache.npy", batch_size=648, progress=False)
        build_cpu, build_wall = time.process_time() - start_cpu, time.perf_counter() - start
        views = args.images * VIEWS
        cache = TeacherLogitCache(path)
        bytes_per_view = path.stat().st_size / views

        live = _module(teacher_file, fold_teacher_bn=True)
        cached = _module(teacher_file, teacher_cache=str(path))
        cached.teacher_component.open(cache.compared_metadata())
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn(args.batch_size, 3, 32, 32, generator=g)
        if args.channels_last:  # what the step runner does with channels_last=True
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            for module in (live, cached):
                module.student.to(memory_format=torch.channels_last)
                module.teacher.to(memory_format=torch.channels_last)
        targets = torch.randint(0, CLASSES, (args.batch_size,), generator=g)
        keys = torch.randint(0, views, (args.batch_size,), generator=g)
        runs = {}
        for name, module, extras in (("live folded teacher", live, ()), ("cache", cached, (keys,))):
            module.train()
            optimizer = torch.optim.SGD(module.student.parameters(), lr=0.05, momentum=0.9)

            def step(module=module, extras=extras, optimizer=optimizer) -> None:
                _, terms = module.training_terms(inputs, targets, extras)
                optimizer.zero_grad(set_to_none=True)
                sum(terms.values()).backward()
                optimizer.step()

            step()  # warm-up (folds the teacher, allocates)
            runs[name] = (module, step, [])
        forward_net = live.teacher_network()
        teacher_rate = []
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                runs[name][2].append(_timed(runs[name][1], args.steps))
            with torch.no_grad():
                teacher_rate.append(_timed(lambda: forward_net(inputs), args.steps))

    live_cpu = statistics.median(c for c, _ in runs["live folded teacher"][2])
    live_wall = statistics.median(w for _, w in runs["live folded teacher"][2])
    cache_cpu = statistics.median(c for c, _ in runs["cache"][2])
    cache_wall = statistics.median(w for _, w in runs["cache"][2])
    forward_cpu = statistics.median(c for c, _ in teacher_rate)
    forward_wall = statistics.median(w for _, w in teacher_rate)
    print(
        f"teacher cache benchmark: {TEACHER} -> {STUDENT}, KD+LS, batch {args.batch_size}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print("| measure | CPU time | wall time |\n|---|---|---|")
    print(f"| step, live folded teacher (ms) | {1e3 * live_cpu:.1f} | {1e3 * live_wall:.1f} |")
    print(f"| step, cache (ms) | {1e3 * cache_cpu:.1f} | {1e3 * cache_wall:.1f} |")
    print(
        f"| **speed-up of the step (live / cache)** | **{live_cpu / cache_cpu:.2f}x** | "
        f"**{live_wall / cache_wall:.2f}x** |"
    )
    build_rate_cpu, build_rate_wall = views / build_cpu, views / build_wall
    train_rate_cpu, train_rate_wall = args.batch_size / forward_cpu, args.batch_size / forward_wall
    print(f"| build rate (views/s, batch 648, unfolded, fp32) | {build_rate_cpu:.0f} | {build_rate_wall:.0f} |")
    print(
        f"| teacher forward in training (images/s, batch {args.batch_size}, folded) | {train_rate_cpu:.0f} | "
        f"{train_rate_wall:.0f} |"
    )
    print(
        f"| **build rate / training forward rate** | **{build_rate_cpu / train_rate_cpu:.2f}** | "
        f"**{build_rate_wall / train_rate_wall:.2f}** |"
    )
    full = CIFAR_IMAGES * VIEWS * bytes_per_view
    print(f"| size per (image, view) (bytes) | {bytes_per_view:.1f} | |")
    print(f"| complete CIFAR-100 cache (GB) | {full / 1e9:.2f} | |")
    hours = CIFAR_IMAGES * VIEWS / build_rate_wall / 3600
    print(f"| complete CIFAR-100 build at this rate (hours) | {hours:.1f} | |")


if __name__ == "__main__":
    main()
