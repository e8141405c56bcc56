"""Tiny networks and in-memory data for fast module tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(nn.Module):
    """conv -> BN -> ReLU -> pool -> linear: small, but with BatchNorm buffers to check the teacher's freeze."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


def separable_loaders(n: int = 64, num_classes: int = 4, batch_size: int = 16, seed: int = 0):
    """Train/val loaders of 8x8 images whose class sets the mean of one channel: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    x[:, 0] += y.view(-1, 1, 1).float()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, shuffle=True), DataLoader(ds, batch_size=batch_size)
