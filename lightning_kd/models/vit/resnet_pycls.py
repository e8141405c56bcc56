"""The CIFAR ResNet-56 guidance teacher of the LSKD tiny-transformers suite, in pycls' layout (Radosavovic et al.,
"Designing Network Design Spaces", CVPR 2020, whose code base the suite builds on).

The architecture is He et al.'s CIFAR ResNet-56 (CVPR 2016, section 4.2), the same network as the project's
``resnet56``: a 3x3 stem of 16 channels, three stages of nine post-activation basic blocks at widths 16, 32, 64
(strides 1, 2, 2), a 1x1 convolution + BN shortcut where the shape changes, global average pooling and a linear
classifier; 861,620 parameters at 100 classes, as the reference's r-56_c100 config builds. What differs is the
layout and the init: parameter names follow pycls (``stem.conv``, ``s1.b1.f.a``, ``s2.b1.proj``, ``head.fc``, ...)
so the reference's teacher weights (``model.pyth``, under ``"model_state"``) load with ``strict=True``; the
classifier starts from N(0, 0.01^2) weights and zero bias (convolutions: He normal, fan-out).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.models.vit._common import resolve_indices

__all__ = ["PyclsResNet", "resnet56_pycls"]


class _BasicTransform(nn.Module):
    """Residual branch: 3x3 conv (stride ``stride``) - BN - ReLU - 3x3 conv - BN."""

    def __init__(self, w_in: int, w_out: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(w_in, w_out, 3, stride=stride, padding=1, bias=False)
        self.a_bn = nn.BatchNorm2d(w_out)
        self.b = nn.Conv2d(w_out, w_out, 3, padding=1, bias=False)
        self.b_bn = nn.BatchNorm2d(w_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.b_bn(self.b(F.relu(self.a_bn(self.a(x)))))


class _ResBlock(nn.Module):
    """relu(shortcut(x) + f(x)); the shortcut is a 1x1 conv + BN where width or resolution changes."""

    def __init__(self, w_in: int, w_out: int, stride: int) -> None:
        super().__init__()
        # registered before ``f`` so the state dict keeps pycls' key order
        self.proj: nn.Conv2d | None = None
        self.bn: nn.BatchNorm2d | None = None
        if w_in != w_out or stride != 1:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride=stride, bias=False)
            self.bn = nn.BatchNorm2d(w_out)
        self.f = _BasicTransform(w_in, w_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.bn(self.proj(x))
        return F.relu(shortcut + self.f(x))


class _Stem(nn.Module):
    def __init__(self, w_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, w_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class _Head(nn.Module):
    def __init__(self, w_in: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def _stage(w_in: int, w_out: int, stride: int, depth: int) -> nn.Sequential:
    stage = nn.Sequential()
    for i in range(depth):
        stage.add_module(f"b{i + 1}", _ResBlock(w_in if i == 0 else w_out, w_out, stride if i == 0 else 1))
    return stage


class PyclsResNet(nn.Module):
    """pycls' CIFAR ResNet of depth ``6n + 2`` (widths 16, 32, 64).

    Args:
        depth: Number of weighted layers, ``6n + 2``.
        num_classes: Number of logits.

    Raises:
        ValueError: If ``depth`` is not of the form ``6n + 2``.
    """

    # The teacher features the reference's locality guidance uses (INTER_TEACHER_INDEX): the three stage outputs.
    reference_indices: tuple[int, ...] = (0, 1, 2)
    # forward_intermediates returns (logits, features): lightning_kd.features reads both from one pass
    intermediates_with_logits: bool = True

    def __init__(self, depth: int = 56, num_classes: int = 100) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"A CIFAR ResNet has depth 6n + 2 with n >= 1, got depth={depth}.")
        blocks = (depth - 2) // 6
        self.num_classes = num_classes
        self.stem = _Stem(16)
        self.s1 = _stage(16, 16, 1, blocks)
        self.s2 = _stage(16, 32, 2, blocks)
        self.s3 = _stage(32, 64, 2, blocks)
        self.head = _Head(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # N(0, 2 / (k^2 * C_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(B, num_classes)``."""
        return self.head(self.s3(self.s2(self.s1(self.stem(x)))))

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Return the logits and the outputs of stages ``indices`` (default all three: ``(0, 1, 2)``).

        Returns:
            ``(logits, features)``; on 32 px inputs (the reference's ``TEACHER_IMG_SIZE``) the stages give
            ``(B, 16, 32, 32)``, ``(B, 32, 16, 16)`` and ``(B, 64, 8, 8)``.
        """
        wanted = resolve_indices(indices, 3, self.reference_indices)
        stages = [self.s1(self.stem(x))]
        stages.append(self.s2(stages[-1]))
        stages.append(self.s3(stages[-1]))
        return self.head(stages[-1]), [stages[i] for i in wanted]


def resnet56_pycls(num_classes: int = 100) -> PyclsResNet:
    """The reference's r-56_c100 guidance teacher: 861,620 parameters at 100 classes."""
    return PyclsResNet(56, num_classes)
