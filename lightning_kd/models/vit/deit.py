"""DeiT-Tiny (Touvron et al., "Training data-efficient image transformers & distillation through attention",
ICML 2021) as the LSKD tiny-transformers suite trains it on CIFAR-100 (inputs resized to 224 px).

timm's ``VisionTransformer`` / ``VisionTransformerDistilled`` with the reference's DeiT-Ti settings: patch 16,
width 192, 12 blocks of 3 heads, MLP ratio 4, qkv bias, LayerNorm eps 1e-6, stochastic depth rising linearly from
0 to ``drop_path_rate`` (0.1 in the reference configs). timm builds the same parameters as the reference's own
DeiT, so the counts match exactly (100 classes): 5,543,716 without and 5,563,400 with the distillation token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from lightning_kd.models.vit._common import no_distillation_token, resolve_indices

__all__ = ["DeiT", "DistilledDeiT", "deit_tiny", "deit_tiny_distilled"]

_DEIT_TINY = {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0, "qkv_bias": True}


class _DeiTContract:
    """``forward_intermediates`` on top of timm's: final logits plus the token maps of chosen blocks."""

    # The student blocks the reference's locality guidance matches (INTER_STUDENT_INDEX) to the teacher's 3 stages.
    reference_indices: tuple[int, ...] = (0, 6, 11)
    # forward_intermediates returns (logits, features): lightning_kd.features reads both from one pass
    intermediates_with_logits: bool = True

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Return the logits and the outputs of the blocks ``indices`` (default :attr:`reference_indices`).

        Unlike timm's method of the same name, the first element is the logits, as :meth:`forward` gives them.

        Args:
            x: Images, ``(B, 3, img_size, img_size)``.
            indices: Block indices in ``[0, 12)`` (negative ones count from the end), in the order wanted.

        Returns:
            ``(logits, features)``: logits ``(B, num_classes)``; each feature is a block's output before the final
            norm, class/distillation tokens dropped, on the patch grid: ``(B, 192, img_size / 16, img_size / 16)``
            (``(B, 192, 14, 14)`` at 224 px).
        """
        wanted = resolve_indices(indices, len(self.blocks), self.reference_indices)
        taken = sorted(set(wanted))
        final, features = super().forward_intermediates(x, indices=taken, output_fmt="NCHW")
        by_index = dict(zip(taken, features, strict=True))
        return self.forward_head(final), [by_index[i] for i in wanted]


class DeiT(_DeiTContract, VisionTransformer):
    """DeiT-Tiny with a class token only; ``forward`` returns its head's logits."""

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Not available: this model has no distillation token (build it with ``distilled=True``)."""
        raise no_distillation_token("deit_tiny")


class DistilledDeiT(_DeiTContract, VisionTransformerDistilled):
    """DeiT-Tiny with a distillation token and a second head.

    As in the reference, ``forward`` returns the class head's logits in training mode and the mean of both heads'
    logits in eval mode (timm's ``distilled_training`` flag is not used). Distillation trains the heads apart:
    :meth:`forward_heads` returns both.
    """

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits from the normed tokens ``(B, N, C)``: class head in training, mean of both heads in eval."""
        if pre_logits:
            return super().forward_head(x, pre_logits=True)
        class_logits, distill_logits = self._heads(x)
        return class_logits if self.training else (class_logits + distill_logits) / 2

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(class_head_logits, distill_head_logits)``, each ``(B, num_classes)``, in any mode."""
        return self._heads(self.forward_features(x))

    def _heads(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        # token 0 is the class token, token 1 the distillation token
        return self.head(self.head_drop(tokens[:, 0])), self.head_dist(self.head_drop(tokens[:, 1]))


def _reference_init(model: VisionTransformer) -> None:
    # The reference starts its heads at zero and draws the class token from N(0, 0.02^2) (timm: N(0, 1e-12)).
    heads = [model.head, getattr(model, "head_dist", None)]
    for head in (h for h in heads if isinstance(h, nn.Linear)):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    with torch.no_grad():
        nn.init.trunc_normal_(model.cls_token, std=0.02)


def deit_tiny(
    num_classes: int = 100, *, distilled: bool = False, drop_path_rate: float = 0.1, img_size: int = 224
) -> DeiT | DistilledDeiT:
    """DeiT-Ti for the ViT table: 5,543,716 parameters at 100 classes (5,563,400 with ``distilled=True``).

    Args:
        num_classes: Number of logits.
        distilled: Add the distillation token and head (DeiT's "⚗" variant).
        drop_path_rate: Stochastic-depth rate of the last block (linear from 0 at the first).
        img_size: Input side in pixels, a multiple of 16; inputs must have exactly this size.
    """
    cls = DistilledDeiT if distilled else DeiT
    model = cls(img_size=img_size, num_classes=num_classes, drop_path_rate=drop_path_rate, **_DEIT_TINY)
    _reference_init(model)
    return model


def deit_tiny_distilled(num_classes: int = 100, *, drop_path_rate: float = 0.1, img_size: int = 224) -> DistilledDeiT:
    """:func:`deit_tiny` with the distillation token (5,563,400 parameters at 100 classes)."""
    return deit_tiny(num_classes, distilled=True, drop_path_rate=drop_path_rate, img_size=img_size)
