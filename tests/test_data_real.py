"""Opt-in checks on the real CIFAR-100 copy in ``../shared/data`` (skipped when it is absent).

That copy is a lossless reconstruction whose ``train``/``test`` files differ byte-wise from the original
download, so it is read with ``verify_checksums=False``. It is only read, never written.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_kd.data import CIFAR100DataModule

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def real_cifar() -> CIFAR100DataModule:
    if not (DATA_DIR / "cifar-100-python").is_dir():
        pytest.skip(f"real CIFAR-100 not available: {DATA_DIR / 'cifar-100-python'} does not exist")
    dm = CIFAR100DataModule(str(DATA_DIR), batch_size=16, num_workers=0, verify_checksums=False)
    with pytest.warns(UserWarning, match="without verifying md5 checksums"):
        dm.setup("fit")
    return dm


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and (population) std in [0, 1] units of ``N x H x W x 3`` uint8 images."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for channel in range(3):
        counts = np.bincount(images[..., channel].ravel(), minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return means, stds


def test_real_cifar100_sizes_labels_and_class_balance(real_cifar):
    train, test = real_cifar.train_set, real_cifar.val_set
    assert (len(train), len(test)) == (50000, 10000)
    assert train.targets[:5] == [19, 29, 0, 11, 1], f"first train labels {train.targets[:5]}"
    assert test.targets[:5] == [49, 33, 72, 51, 71], f"first test labels {test.targets[:5]}"
    assert np.bincount(train.targets, minlength=100).tolist() == [500] * 100
    assert np.bincount(test.targets, minlength=100).tolist() == [100] * 100
    assert len(train.classes) == 100
    assert train.classes[:3] == ["apple", "aquarium_fish", "baby"]


def test_real_cifar100_training_channel_statistics(real_cifar):
    means, stds = _channel_stats(real_cifar.train_set.data)
    report = f"measured train mean {[round(m, 4) for m in means]}, std {[round(s, 4) for s in stds]}"
    print(report)
    assert np.allclose(means, (0.5071, 0.4865, 0.4409), atol=1e-3), report
    assert np.allclose(stds, (0.2673, 0.2564, 0.2762), atol=1e-3), report


def test_real_cifar100_batch_through_a_model(real_cifar):
    from lightning_kd.models import create_model

    torch.manual_seed(0)
    images, labels = next(iter(real_cifar.val_dataloader()))
    assert images.shape == (16, 3, 32, 32)
    # Normalized with the reference constants, so the batch is roughly standardized.
    assert abs(images.mean().item()) < 0.5, f"normalized batch mean {images.mean().item():.3f}"
    assert labels.tolist()[:5] == [49, 33, 72, 51, 71]
    model = create_model("resnet8", num_classes=100).eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (16, 100)
    assert not torch.isnan(logits).any()


def test_real_teacher_checkpoint_loads_strictly_and_classifies(real_cifar):
    """The real resnet20 teacher (reference format, 59.48% top-1) loads unchanged and is accurate here too."""
    from lightning_kd.models import create_model

    weights = DATA_DIR / "teachers" / "resnet20_cifar100_15ep.pth"
    if not weights.is_file():
        pytest.skip(f"real teacher not available: {weights} does not exist")
    teacher = create_model("resnet20", num_classes=100, weights=str(weights)).eval()
    subset = torch.utils.data.Subset(real_cifar.val_set, range(1000))
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(subset, batch_size=250):
            correct += (teacher(images).argmax(dim=1) == labels).sum().item()
    accuracy = correct / len(subset)
    print(f"real teacher top-1 on the first 1000 test images: {accuracy:.4f}")
    # 59.48% over the whole test split; a 1000-image slice stays well within +-6 points of it
    assert 0.53 < accuracy < 0.66, accuracy
