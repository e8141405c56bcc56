"""GPU-resident CIFAR-100 (``device_augment=True``): uint8 batches, augmentation on the batch's device."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.utilities.data import _update_dataloader  # what Lightning does to inject a sampler
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision.transforms import functional as TF

from lightning_kd import ClassificationModule
from lightning_kd.data import CIFAR100DataModule
from lightning_kd.data.device_augment import (
    UInt8ImageDataset,
    augment_uint8_batch,
    normalize_uint8_batch,
    random_crop_flip_params,
)
from lightning_kd.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from tests.helpers.fake_data import write_fake_cifar100
from tests.helpers.tiny import TinyNet

N_TRAIN, N_TEST = 64, 32  # fewer than 100 training images: every label is unique, so a label names its image

pytestmark = pytest.mark.filterwarnings("ignore:Loading CIFAR-100 from .* without verifying md5")


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return write_fake_cifar100(tmp_path_factory.mktemp("cifar_device"), n_train=N_TRAIN, n_test=N_TEST, seed=1)


@pytest.fixture(scope="module")
def dm(cifar_dir) -> CIFAR100DataModule:
    module = CIFAR100DataModule(
        str(cifar_dir), batch_size=16, num_workers=0, verify_checksums=False, device_augment=True
    )
    module.setup("fit")
    return module


def _torchvision_reference(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, image by image through PIL."""
    out = []
    for image, (top, left), flip in zip(images, offsets.tolist(), flips.tolist(), strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        pil = TF.crop(TF.pad(pil, 4, fill=0), top, left, 32, 32)  # RandomCrop pads the raw image with 0
        if flip:
            pil = TF.hflip(pil)
        out.append(TF.normalize(TF.to_tensor(pil), CIFAR100_MEAN, CIFAR100_STD))
    return torch.stack(out)


def test_augmentation_equals_torchvision_exactly_for_given_offsets_and_flips():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    # Every corner extreme, plus random ones.
    offsets = torch.cat([torch.tensor([[0, 0], [0, 8], [8, 0], [8, 8]]), torch.randint(0, 9, (20, 2), generator=g)])
    flips = torch.rand(24, generator=g) < 0.5
    flips[:2] = torch.tensor([True, False])
    out = augment_uint8_batch(images, offsets, flips, CIFAR100_MEAN, CIFAR100_STD, padding=4)
    assert out.dtype == torch.float32
    assert out.shape == (24, 3, 32, 32)
    assert torch.equal(out, _torchvision_reference(images, offsets, flips))


def test_normalization_equals_torchvision_eval_transform_exactly():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = torch.stack(
        [
            TF.normalize(TF.to_tensor(Image.fromarray(i.permute(1, 2, 0).numpy())), CIFAR100_MEAN, CIFAR100_STD)
            for i in images
        ]
    )
    assert torch.equal(normalize_uint8_batch(images, CIFAR100_MEAN, CIFAR100_STD), expected)


def test_bad_inputs_are_clear_errors():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(TypeError, match="expected a uint8 image batch"):
        normalize_uint8_batch(images.float(), CIFAR100_MEAN, CIFAR100_STD)
    with pytest.raises(ValueError, match=r"offsets must have shape \(2, 2\) and flips \(2,\) .* got \(3, 2\)"):
        augment_uint8_batch(
            images, torch.zeros(3, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool), (0,) * 3, (1,) * 3
        )
    with pytest.raises(TypeError, match=r"images must be an \(N, C, H, W\) uint8 tensor"):
        UInt8ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2))


def _position_image() -> torch.Tensor:
    """One 32x32 image whose channel 0 holds the row + 1 and channel 1 the column + 1 (0 marks the padding)."""
    rows = torch.arange(1, 33, dtype=torch.uint8)[:, None].expand(32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8)[None, :].expand(32, 32)
    return torch.stack([rows, cols, torch.zeros(32, 32, dtype=torch.uint8)])


def test_module_draws_offsets_uniformly_on_0_to_8_and_flips_half(dm):
    # Read the crop and flip back from the augmented position image.
    n = 3000
    images = _position_image().expand(n, 3, 32, 32)
    torch.manual_seed(0)
    out = dm.device_transform(images, training=True)
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    pixels = ((out * std + mean) * 255).round().long()  # (n, 3, 32, 32) back to 0..255
    # Output row 8 reads padded row top + 8, i.e. image row top + 4 (always inside the image for top in 0..8).
    tops = pixels[:, 0, 8, 8] - 5
    flipped = pixels[:, 1, 8, 9] < pixels[:, 1, 8, 8]  # columns run backwards in a mirrored crop
    lefts = torch.where(flipped, pixels[:, 1, 8, 8] - 20, pixels[:, 1, 8, 8] - 5)
    for offsets in (tops, lefts):
        assert offsets.min() == 0
        assert offsets.max() == 8
        counts = torch.bincount(offsets, minlength=9).double()
        expected = n / 9
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 40.0  # 8 degrees of freedom: the 1e-5 tail is at about 37
    assert abs(flipped.double().mean().item() - 0.5) < 0.04


def test_random_params_are_drawn_on_the_requested_device():
    offsets, flips = random_crop_flip_params(10, padding=4, device="cpu")
    assert offsets.shape == (10, 2)
    assert offsets.dtype == torch.int64
    assert flips.dtype == torch.bool


def test_uint8_dataset_and_batches(dm, cifar_dir):
    with (cifar_dir / "cifar-100-python" / "train").open("rb") as file:
        entry = pickle.load(file, encoding="latin1")
    data = np.asarray(entry["data"]).reshape(-1, 3, 32, 32)  # R, G, B planes, row-major
    assert isinstance(dm.train_set, UInt8ImageDataset)
    assert dm.train_set.images.dtype == torch.uint8
    assert dm.train_set.images.shape == (N_TRAIN, 3, 32, 32)
    assert torch.equal(dm.train_set.images, torch.from_numpy(data))
    assert dm.train_set.targets.tolist() == entry["fine_labels"]
    images, targets = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8
    assert images.shape == (16, 3, 32, 32)
    assert targets.dtype == torch.int64
    for image, target in zip(images, targets, strict=True):  # each batch row is the image of its label
        assert torch.equal(image, dm.train_set.images[dm.train_set.targets == target][0])
    assert isinstance(dm.val_set, UInt8ImageDataset)
    assert dm.test_set is dm.val_set
    assert len(dm.val_set) == N_TEST


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_ddp_rank_sees_its_own_shard(dm, shuffle):
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dm.train_set, num_replicas=2, rank=rank, shuffle=shuffle, seed=0)
        sampler.set_epoch(0)
        # Lightning re-creates the data module's loader with its DistributedSampler this way under DDP.
        loader = _update_dataloader(dm.train_dataloader(), sampler)
        seen = []
        for images, targets in loader:
            assert images.dtype == torch.uint8
            for image, target in zip(images, targets, strict=True):
                index = int((dm.train_set.targets == target).nonzero())
                assert torch.equal(image, dm.train_set.images[index])
                seen.append(index)
        assert seen == list(sampler)
        shards.append(seen)
    assert len(shards[0]) == len(shards[1]) == N_TRAIN // 2
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(N_TRAIN))


def test_hook_without_trainer_only_normalizes(dm):
    images, targets = next(iter(dm.val_dataloader()))
    out_images, out_targets = dm.on_after_batch_transfer((images, targets), 0)
    assert torch.equal(out_images, normalize_uint8_batch(images, CIFAR100_MEAN, CIFAR100_STD))
    assert out_targets is targets


def test_hook_passes_batches_through_without_device_augment(cifar_dir):
    plain = CIFAR100DataModule(str(cifar_dir), verify_checksums=False)
    batch = (torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    assert plain.on_after_batch_transfer(batch, 0) is batch


def test_device_augment_with_two_views_is_a_clear_error():
    with pytest.raises(ValueError, match=r"two_views=True and device_augment=True cannot be combined: .*PIL pipeline"):
        CIFAR100DataModule("unused", two_views=True, device_augment=True)


class _RecordBatches(Callback):
    """Keep the batches the module receives (after the transfer hook) in training and validation."""

    def __init__(self) -> None:
        self.train: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((batch[0].cpu(), batch[1].cpu()))  # on a GPU the batch arrives there; compare on the CPU

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append((batch[0].cpu(), batch[1].cpu()))


def test_fit_trains_on_device_augmented_batches(dm, tmp_path):
    seed_everything(0)
    record = _RecordBatches()
    trainer = Trainer(
        max_steps=4,
        limit_val_batches=2,
        val_check_interval=4,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=tmp_path,
    )
    model = ClassificationModule(TinyNet(num_classes=100), num_classes=100)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4
    assert len(record.train) == 4
    assert len(record.val) == 2
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    padded = torch.nn.functional.pad(dm.train_set.images, (4, 4, 4, 4))
    n_plain = 0
    for images, targets in record.train:
        assert images.dtype == torch.float32
        assert images.shape == (16, 3, 32, 32)
        pixels = ((images * std + mean) * 255).round().to(torch.uint8)
        for image, target in zip(pixels, targets, strict=True):
            index = int((dm.train_set.targets == target).nonzero())
            crops = torch.stack([padded[index, :, i : i + 32, j : j + 32] for i in range(9) for j in range(9)])
            assert (crops == image).flatten(1).all(1).any() or (crops.flip(-1) == image).flatten(1).all(1).any()
            n_plain += torch.equal(image, dm.train_set.images[index])
    assert n_plain < 8  # the un-augmented image (offset 4, 4, no flip) has probability 1/162
    # Validation batches: the test split in order, only normalized.
    val_images = torch.cat([images for images, _ in record.val])
    assert torch.equal(val_images, normalize_uint8_batch(dm.val_set.images[:32], CIFAR100_MEAN, CIFAR100_STD))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_augmentation_matches_cpu_without_host_sync():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    offsets, flips = random_crop_flip_params(64)
    expected = augment_uint8_batch(images, offsets, flips, CIFAR100_MEAN, CIFAR100_STD)
    dm = CIFAR100DataModule("unused", device_augment=True)
    gpu_images, gpu_offsets, gpu_flips = images.cuda(), offsets.cuda(), flips.cuda()
    # The normalization constants are copied to the device once, at the first batch: do that before the check.
    dm.device_transform(gpu_images, training=False)
    mean, std = torch.tensor(CIFAR100_MEAN).cuda(), torch.tensor(CIFAR100_STD).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment_uint8_batch(gpu_images, gpu_offsets, gpu_flips, mean, std)
        drawn = dm.device_transform(gpu_images, training=True)
        evaluated = dm.device_transform(gpu_images, training=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out.cpu(), expected)
    assert drawn.shape == (64, 3, 32, 32)
    assert torch.equal(evaluated.cpu(), normalize_uint8_batch(images, CIFAR100_MEAN, CIFAR100_STD))
