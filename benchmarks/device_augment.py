"""Throughput of CIFAR-100 data paths: the PIL reference transform vs. uint8 batches augmented on the device.

Run: ``python benchmarks/device_augment.py [--n 20000] [--batch-size 64]``. It writes random-pixel CIFAR-100 files in
the on-disk format to a temporary folder (speed does not depend on the pixels) and prints images per second for:

1. the reference per-image PIL pipeline (``RandomCrop(32, padding=4)`` + flip + ``ToTensor`` + ``Normalize``) in
   one process, i.e. what one DataLoader worker delivers;
2. ``CIFAR100DataModule(device_augment=True)``'s training loader (uint8 batches gathered by index, no workers);
3. the on-device augmentation of those batches (``device_transform``), on CUDA when available, else the CPU.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_kd.data import CIFAR100DataModule
from tests.helpers.fake_data import write_fake_cifar100


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} img/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="training images to write")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as root:
        write_fake_cifar100(root, n_train=args.n, n_test=100)
        import warnings

        warnings.filterwarnings("ignore", message="Loading CIFAR-100 .* without verifying")
        pil = CIFAR100DataModule(root, batch_size=args.batch_size, num_workers=0, verify_checksums=False)
        pil.setup("fit")
        n_pil = min(args.n, 5000)
        start = time.perf_counter()
        for index in range(n_pil):
            pil.train_set[index]
        pil_s = time.perf_counter() - start

        dm = CIFAR100DataModule(
            root, batch_size=args.batch_size, num_workers=0, verify_checksums=False, device_augment=True
        )
        dm.setup("fit")
        on_device = []
        start = time.perf_counter()
        for images, _ in dm.train_dataloader():  # batches are dropped as in training, so pinned buffers get reused
            if len(on_device) < 100:
                on_device.append(images.to(device, non_blocking=True))
        load_s = time.perf_counter() - start

        for images in on_device[:5]:  # warm-up
            dm.device_transform(images, training=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for images in on_device:
            dm.device_transform(images, training=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        aug_s = time.perf_counter() - start
        n_aug = sum(images.shape[0] for images in on_device)

    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print(f"PIL reference transform, 1 process        {_rate(n_pil, pil_s)}")
    print(f"uint8 batch loader (batch {args.batch_size}, 0 workers)  {_rate(args.n, load_s)}")
    print(f"device augmentation on {device.type:<4} (batch {args.batch_size}) {_rate(n_aug, aug_s)}")


if __name__ == "__main__":
    main()
