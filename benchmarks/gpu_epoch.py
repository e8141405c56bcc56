"""CIFAR-100 distillation throughput on one GPU: the reference-style loop, the default module, the fast preset.

In one process: writes random-pixel CIFAR-100 files in the on-disk format (50,000 + 10,000 images; speed does
not depend on pixel values), then measures training images per second of resnet32x4 (frozen) -> resnet8x4,
KD + logit standardization (T 2, CE 0.1, KD 9), SGD (lr 0.05, momentum 0.9, wd 5e-4), batch 64:

1. ``reference``: a plain PyTorch loop as the reference code runs it: torchvision ``CIFAR100`` with the PIL
   transforms (pad-4 random crop, flip, ``ToTensor``, ``Normalize``), ``DataLoader(shuffle, 8 workers)``, fp32;
2. ``default``: ``DistillationModule(fold_teacher_bn=True)`` + ``CIFAR100DataModule(num_workers=8)`` under
   ``Trainer.fit``, 32-true, CSV logger (the default config: every distillation preset folds the teacher's
   BatchNorms); ``default_unfolded`` the same with ``fold_teacher_bn=False``;
3. ``fast``: the settings of ``configs/cifar100/fast.yaml``: ``device_augment=True`` (uint8 batches augmented
   on the GPU, ``num_workers=0``), ``bf16-mixed``, ``cuda_graph=True``, ``channels_last=True``, cuDNN
   autotuning (``benchmark``); ``fast_nchw`` is ``fast`` without ``channels_last``, ``fast_eager`` without the
   CUDA graph (to see what each adds);
4. ``bare_graph``: the ceiling, :class:`~lightning_kd.cuda_graph.WholeStepGraph` alone on random device
   batches (bf16, channels_last, folded teacher, no Lightning, no loader), with the time one (re-)capture takes
   (``capture_s``); ``bare_graph_nchw`` the same in NCHW. ``fast`` over ``bare_graph`` is what Lightning, the
   module and the data pipeline cost per step;
5. ``reference_again``: the reference loop once more, at the end; the two reference rows differ by noise only.
6. The teacher-logit cache (``lightning_kd.teacher_cache``), on a smaller fake training set of ``--cache-images``
   images (a complete cache of 50,000 images takes minutes to build): ``cache_build`` builds the cache of that set
   (fp32, TF32 off, ``--cache-batch`` forwards per batch) and reports views per second and the minutes a complete
   CIFAR-100 build (8.1 M views) takes at that rate; ``fast_small`` is ``fast`` on that set and ``fast_cached`` the
   same with ``teacher_cache`` (``view_keys=True``), both over as many epochs as the timed window needs (a CUDA-graph
   re-capture at each epoch start is inside the window for both). ``fast_cached / fast_small`` is the cache's gain.

Each measurement runs ``--warmup`` steps (worker start-up, cuDNN autotuning, graph capture), then times
``--steps`` steps with the device synchronised at both ends. Only training steps are timed (no validation,
no epoch boundary); "240 epochs" is 240 x 50,000 images at the measured rate. Prints a table with the ratios to
the reference loop and writes the numbers as JSON (``--json``). The targets on one H100: default >= 1.0x,
fast >= 3x, 240 epochs of the fast preset <= 10 minutes.

    python benchmarks/gpu_epoch.py --json $OUT/gpu_epoch.json          # on a GPU, about 3 minutes
    python benchmarks/gpu_epoch.py --smoke                              # CPU plumbing check, small models

No jsonargparse needed (the Python API only).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing the package (the lent GPU machine)
    sys.path.insert(0, str(ROOT))

from benchmarks.reference_step import reference_step  # noqa: E402
from lightning_kd import DistillationModule  # noqa: E402
from lightning_kd.cuda_graph import WholeStepGraph, is_supported  # noqa: E402
from lightning_kd.data import CIFAR100DataModule  # noqa: E402
from lightning_kd.losses import KD  # noqa: E402
from lightning_kd.models import create_model  # noqa: E402
from lightning_kd.models.fold import fold_batchnorm  # noqa: E402
from tests.helpers.fake_data import write_fake_cifar100  # noqa: E402

TRAIN_IMAGES = 50_000
EPOCHS = 240


def _loss() -> KD:
    return KD(temperature=2.0, ce_weight=0.1, kd_weight=9.0, standardize=True)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _networks(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return create_model(args.student, num_classes=100), create_model(args.teacher, num_classes=100)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Window(Callback):
    """Wall time of batches ``warmup .. warmup + steps - 1``, the device synchronised at both ends.

    Counted by batch index (one epoch), not ``global_step``, so the window does not depend on how a module's
    optimization mode counts steps.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.end = math.nan
        self.seen = 0  # batches started, over every epoch (a small data set needs several epochs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.warmup:
            _sync(self.device)
            self.start = time.perf_counter()
        self.seen += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seen == self.warmup + self.steps:
            _sync(self.device)
            self.end = time.perf_counter()


def reference_loop(args: argparse.Namespace, device: torch.device) -> float:
    """Images per second of the plain loop over torchvision's dataset with PIL transforms (fp32).

    With ``cudnn.benchmark`` on, as the reference training scripts set it.
    """
    with _cudnn_benchmark():
        return _reference_loop(args, device)


@contextlib.contextmanager
def _cudnn_benchmark():
    """cuDNN autotuning on for the block (Trainer runs set it through ``Trainer(benchmark=...)``)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _reference_loop(args: argparse.Namespace, device: torch.device) -> float:
    data = CIFAR100DataModule(args.data_dir, batch_size=args.batch_size, verify_checksums=False)
    data.setup("fit")  # torchvision CIFAR100 (md5 check off: random pixels) with the reference PIL transforms
    loader = DataLoader(data.train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    student, teacher = _networks(args)
    student.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    loss, optimizer = _loss(), _sgd(student.parameters())
    start = math.nan
    for step, (inputs, targets) in enumerate(_forever(loader)):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        if step == args.warmup + args.steps:
            _sync(device)
            return args.steps * args.batch_size / (time.perf_counter() - start)
        reference_step(student, teacher, loss, optimizer, inputs.to(device), targets.to(device))
    raise AssertionError("unreachable: the loader repeats forever")


def bare_graph(args: argparse.Namespace, device: torch.device, channels_last: bool) -> dict[str, float]:
    """The ceiling: :class:`WholeStepGraph` alone (no Lightning, no loader), bf16, on random device batches.

    Also reports what one capture costs (it happens at each epoch start and LR change under ``cuda_graph``).
    """
    if not is_supported(device):
        raise NotImplementedError("needs a CUDA device")
    student, teacher = _networks(args)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student.to(device, memory_format=memory_format).train()
    teacher = fold_batchnorm(teacher.to(device, memory_format=memory_format).eval())
    loss, optimizer = _loss(), _sgd(student.parameters())

    def step_fn(inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            logits = student(inputs)
        terms = loss(logits, teacher_logits, targets)
        return {"loss": terms["ce"] + terms["kd"], **terms}

    graph = WholeStepGraph(step_fn, optimizer, channels_last=channels_last)
    # a pool of random batches, so replays do not read one cached input
    pool = [
        (
            torch.randn(args.batch_size, 3, 32, 32, device=device),
            torch.randint(0, 100, (args.batch_size,), device=device),
        )
        for _ in range(8)
    ]
    for step in range(args.warmup):
        graph.run(*pool[step % len(pool)])
    captures = []
    for _ in range(3):  # what a re-capture costs (each epoch start)
        graph.invalidate()
        before = graph.capture_seconds
        graph.run(*pool[0])
        captures.append(graph.capture_seconds - before)
    _sync(device)
    start = time.perf_counter()
    for step in range(args.steps):
        graph.run(*pool[step % len(pool)])
    _sync(device)
    return {
        "img_per_s": args.steps * args.batch_size / (time.perf_counter() - start),
        "capture_s": sorted(captures)[1],
    }


def _with_cudnn_benchmark(fn: Callable[..., Any], *args: Any) -> Any:
    with _cudnn_benchmark():
        return fn(*args)


def _forever(loader: DataLoader):
    while True:
        yield from loader


def module_fit(
    args: argparse.Namespace,
    device: torch.device,
    tmp: str,
    *,
    precision: str,
    benchmark: bool,
    data_options: dict[str, Any],
    module_options: dict[str, Any],
    teacher: torch.nn.Module | None = None,
    data_dir: str | None = None,
    train_images: int = TRAIN_IMAGES,
) -> float:
    """Images per second of ``DistillationModule`` under ``Trainer.fit`` with the given options.

    ``teacher`` replaces the random teacher (a cache is checked against its weights); ``data_dir`` with
    ``train_images`` images replaces the 50,000-image set (then as many epochs run as the timed window needs).
    """
    student, random_teacher = _networks(args)
    teacher = random_teacher if teacher is None else teacher
    module = DistillationModule(student, teacher, _loss(), optimizer=_sgd, **module_options)
    data_dir = args.data_dir if data_dir is None else data_dir
    data = CIFAR100DataModule(data_dir, batch_size=args.batch_size, verify_checksums=False, **data_options)
    window = _Window(args.warmup, args.steps, device)
    batches_per_epoch = math.ceil(train_images / args.batch_size)
    trainer = Trainer(
        accelerator=device.type if device.type == "cpu" else "gpu",
        devices=1,
        precision=precision,
        benchmark=benchmark,
        max_epochs=math.ceil((args.warmup + args.steps) / batches_per_epoch),
        limit_train_batches=min(args.warmup + args.steps, batches_per_epoch),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp, name="gpu_epoch"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[window],
    )
    trainer.fit(module, datamodule=data)
    if math.isnan(window.start) or math.isnan(window.end):
        raise RuntimeError(f"the timed window was not reached ({trainer.global_step} steps ran)")
    return args.steps * args.batch_size / (window.end - window.start)


def _missing_options(cls: type, names: list[str]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [f"{cls.__name__}.{name}" for name in names if name not in params]


def variants(args: argparse.Namespace, device: torch.device, tmp: str) -> dict[str, Callable[[], Any]]:
    """The measurements, in order; each returns images per second (or a dict with ``img_per_s``)."""

    def fit(precision: str, data_options: dict[str, Any], module_options: dict[str, Any]) -> Callable[[], float]:
        fast = precision == "bf16-mixed"  # fast.yaml also sets trainer.benchmark; the presets leave it off

        def measure() -> float:
            missing = _missing_options(CIFAR100DataModule, list(data_options))
            missing += _missing_options(DistillationModule, list(module_options))
            if missing:
                raise NotImplementedError(f"option(s) not in this checkout: {', '.join(missing)}")
            return module_fit(
                args,
                device,
                tmp,
                precision=precision,
                benchmark=fast,
                data_options=data_options,
                module_options=module_options,
            )

        return measure

    fast_data = {"device_augment": True, "num_workers": 0}
    fold = {"fold_teacher_bn": True}  # as every distillation preset sets it
    fast_module = {**fold, "cuda_graph": True, "channels_last": True}
    cache: dict[str, Any] = {}

    def build_cache() -> dict[str, float]:
        from lightning_kd.apps.cache_teacher import build_teacher_cache

        cache["data_dir"] = str(Path(tmp) / "cache_data")
        write_fake_cifar100(cache["data_dir"], n_train=args.cache_images, n_test=100)
        _, cache["teacher"] = _networks(args)
        module = DistillationModule(_networks(args)[0], cache["teacher"], _loss(), optimizer=_sgd)
        data = CIFAR100DataModule(
            cache["data_dir"],
            batch_size=args.batch_size,
            verify_checksums=False,
            num_workers=0,
            device_augment=True,
            view_keys=True,
        )
        data.setup("fit")
        _sync(device)
        start = time.perf_counter()
        path = Path(tmp) / "teacher_cache.npy"
        build_teacher_cache(module, data, path, batch_size=args.cache_batch, device=device, progress=False)
        _sync(device)
        seconds = time.perf_counter() - start
        cache["path"] = str(path)
        views = args.cache_images * 162
        return {"views_per_s": views / seconds, "minutes_full_build": TRAIN_IMAGES * 162 / (views / seconds) / 60}

    def cached_fit(with_cache: bool) -> Callable[[], float]:
        def measure() -> float:
            if "path" not in cache:
                raise NotImplementedError("cache_build did not run (it builds the cache these rows read)")
            teacher = cache["teacher"]
            options = {**fast_module, "teacher_cache": cache["path"]} if with_cache else fast_module
            return module_fit(
                args,
                device,
                tmp,
                precision="bf16-mixed",
                benchmark=True,
                data_options={**fast_data, "view_keys": with_cache},
                module_options=options,
                teacher=teacher,
                data_dir=cache["data_dir"],
                train_images=args.cache_images,
            )

        return measure

    return {
        "reference": lambda: reference_loop(args, device),
        "default": fit("32-true", {"num_workers": args.workers}, fold),
        "default_unfolded": fit("32-true", {"num_workers": args.workers}, {}),
        "fast": fit("bf16-mixed", fast_data, {**fold, "cuda_graph": True, "channels_last": True}),
        "fast_nchw": fit("bf16-mixed", fast_data, {**fold, "cuda_graph": True}),
        "fast_eager": fit("bf16-mixed", fast_data, {**fold, "channels_last": True}),
        # before the ceiling rows: under the suite's time budget these are the ones that must run
        "cache_build": build_cache,
        "fast_small": cached_fit(with_cache=False),
        "fast_cached": cached_fit(with_cache=True),
        "bare_graph": lambda: _with_cudnn_benchmark(bare_graph, args, device, True),
        "bare_graph_nchw": lambda: _with_cudnn_benchmark(bare_graph, args, device, False),
        # the first row again, last: the spread between the two says what difference is noise
        "reference_again": lambda: reference_loop(args, device),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU-friendly run: plumbing only, numbers mean nothing"
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8, help="loader workers of the reference and default rows")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--only", nargs="+", default=None, help="measure only these rows (names as printed)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip the remaining rows after this time")
    parser.add_argument("--data-dir", default=None, help="where to write the fake CIFAR-100 (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--cache-images", type=int, default=2048, help="training images of the teacher-cache rows")
    parser.add_argument("--cache-batch", type=int, default=4096, help="teacher forwards per batch of the build")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.batch_size, args.workers = 3, 2, 16, 2
        args.cache_images, args.cache_batch = 20, 648
        args.student, args.teacher = "resnet8", "resnet20"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("No CUDA device: this benchmark is meant for a GPU. Use --smoke for a CPU plumbing check.")
    warnings.filterwarnings(
        "ignore", message=r".*(does not have many workers|num_workers|random weights|without verifying md5).*"
    )
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir is None:
            args.data_dir = str(Path(tmp) / "data")
        n_train = 50 * args.batch_size if args.smoke else TRAIN_IMAGES
        write_fake_cifar100(args.data_dir, n_train=n_train, n_test=100 if args.smoke else 10_000)
        written = time.perf_counter() - began
        results: dict[str, dict[str, Any]] = {}
        for name, measure in variants(args, device, tmp).items():
            if args.only is not None and name not in args.only:
                continue
            if time.perf_counter() - began > args.budget_s:
                results[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
                continue
            t0 = time.perf_counter()
            try:
                value = measure()
                results[name] = value if isinstance(value, dict) else {"img_per_s": value}
            except NotImplementedError as err:
                results[name] = {"skipped": str(err)}
            except Exception as err:  # one failing row must not cost the others (one run on a lent GPU)
                traceback.print_exc()
                results[name] = {"skipped": f"failed: {type(err).__name__}: {err}"}
            results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {results[name]}", flush=True)

    reference = results.get("reference", {}).get("img_per_s")
    for row in results.values():
        if "img_per_s" in row:
            row["minutes_240_epochs"] = EPOCHS * TRAIN_IMAGES / row["img_per_s"] / 60
            if reference:
                row["ratio_to_reference"] = row["img_per_s"] / reference
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "setup": f"{args.teacher} -> {args.student}, KD+LS (T 2, CE 0.1, KD 9), SGD, batch {args.batch_size}",
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "write_fake_data_s": round(written, 1),
        "total_s": round(time.perf_counter() - began, 1),
        "rows": results,
    }
    print(f"# {report['setup']}; {report['device']}, torch {report['torch']}; {args.steps} timed steps per row")
    print("| row | img/s | x reference | 240 epochs (min) |")
    print("|---|---|---|---|")
    for name, row in results.items():
        if "img_per_s" in row:
            ratio = f"{row['ratio_to_reference']:.2f}" if "ratio_to_reference" in row else "-"
            print(f"| {name} | {row['img_per_s']:,.0f} | {ratio} | {row['minutes_240_epochs']:.1f} |")
        elif "views_per_s" in row:
            print(f"| {name} | {row['views_per_s']:,.0f} views/s | | full build {row['minutes_full_build']:.1f} |")
        else:
            print(f"| {name} | skipped: {row['skipped']} | | |")
    small, cached = (results.get(k, {}).get("img_per_s") for k in ("fast_small", "fast_cached"))
    if small and cached:
        report["cache_gain"] = cached / small
        print(f"teacher cache: fast_cached / fast_small = {cached / small:.2f}x")
    capture = results.get("bare_graph", {}).get("capture_s")
    if capture is not None:
        print(
            f"one (re-)capture of the whole step: {capture:.3f} s; once per epoch for 240 epochs: "
            f"{capture * EPOCHS / 60:.1f} min"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
