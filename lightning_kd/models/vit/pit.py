"""PiT-Tiny (Heo et al., "Rethinking Spatial Dimensions of Vision Transformers", ICCV 2021) as the LSKD
tiny-transformers suite trains it on CIFAR-100 (inputs resized to 224 px).

timm's ``PoolingVisionTransformer`` with the reference's PiT-Ti settings: a 16x16 patch convolution of stride 8
(224 px -> a 27x27 grid), three stages of 2, 6 and 4 blocks at widths 64, 128 and 256 (2, 4 and 8 heads), MLP ratio
4, qkv bias; between stages a depthwise 3x3 stride-2 convolution pools the tokens (27 -> 14 -> 7) while a linear
layer widens the class token. Parameter count at 100 classes: 4,615,972, equal to the reference's.

Two settings follow the reference rather than timm: block ``i`` of the 12 drops its residual paths with
probability ``drop_path_rate * i / 12`` (timm: ``linspace(0, drop_path_rate, 12)``), and with ``distilled=True``
(timm's PiT distillation token; the reference defines none for PiT) ``forward`` returns the class head's logits in
training mode and the mean of both heads in eval mode, as the reference's distilled DeiT does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from timm.models.pit import PoolingVisionTransformer
from torch import Tensor

from lightning_kd.models.vit._common import no_distillation_token, resolve_indices, tokens_to_map

__all__ = ["PiT", "pit_tiny", "pit_tiny_distilled"]

_PIT_TINY = {
    "patch_size": 16,
    "stride": 8,
    "base_dims": (32, 32, 32),  # per-head width: stage widths 32 * heads = 64, 128, 256
    "depth": (2, 6, 4),
    "heads": (2, 4, 8),
    "mlp_ratio": 4,
}


class PiT(PoolingVisionTransformer):
    """PiT-Tiny with the project's model contract (logits-only ``forward``, ``forward_heads``, block features)."""

    # The reference's INTER_STUDENT_INDEX for PiT: one block in each stage (block 0 of stage 1, the 5th of stage 2,
    # the last of stage 3), counted over all 12 blocks.
    reference_indices: tuple[int, ...] = (0, 6, 11)
    # forward_intermediates returns (logits, features): lightning_kd.features reads both from one pass
    intermediates_with_logits: bool = True

    def __init__(self, *, num_classes: int, distilled: bool, drop_path_rate: float, img_size: int) -> None:
        super().__init__(
            img_size=img_size, num_classes=num_classes, distilled=distilled, drop_path_rate=drop_path_rate, **_PIT_TINY
        )
        blocks = self._blocks()
        for i, block in enumerate(blocks):
            for path in (block.drop_path1, block.drop_path2):
                # timm builds DropPath exactly where the rate is non-zero, as the reference's schedule has it
                if isinstance(path, DropPath):
                    path.drop_prob = drop_path_rate * i / len(blocks)

    def _blocks(self) -> list[torch.nn.Module]:
        return [block for stage in self.transformers for block in stage.blocks]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits from the normed class tokens; with a distillation token, class head in training, mean in eval."""
        if self.head_dist is None or pre_logits:
            return super().forward_head(x, pre_logits=pre_logits)
        class_logits, distill_logits = self._heads(x)
        return class_logits if self.training else (class_logits + distill_logits) / 2

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(class_head_logits, distill_head_logits)``, each ``(B, num_classes)`` (``distilled=True`` only).

        Raises:
            RuntimeError: If the model was built without a distillation token.
        """
        if self.head_dist is None:
            raise no_distillation_token("pit_tiny")
        return self._heads(self.forward_features(x))

    def _heads(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.head_drop(tokens[:, 0])), self.head_dist(self.head_drop(tokens[:, 1]))

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Return the logits and the outputs of the blocks ``indices`` (default :attr:`reference_indices`).

        Unlike timm's stage-level method of the same name, indices count blocks over all stages and the first
        element is the logits, as :meth:`forward` gives them.

        Args:
            x: Images, ``(B, 3, img_size, img_size)``.
            indices: Block indices in ``[0, 12)`` (negative ones count from the end), in the order wanted.

        Returns:
            ``(logits, features)``: each feature is a block's spatial tokens on its stage's grid; at 224 px blocks
            0-1 give ``(B, 64, 27, 27)``, blocks 2-7 ``(B, 128, 14, 14)``, blocks 8-11 ``(B, 256, 7, 7)``.
        """
        wanted = resolve_indices(indices, len(self._blocks()), self.reference_indices)
        found: dict[int, Tensor] = {}
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        index = 0
        # timm's stage forward, unrolled to reach each block's output
        for stage in self.transformers:
            if stage.pool is not None:
                x, cls_tokens = stage.pool(x, cls_tokens)
            height, width = x.shape[-2:]
            prefix = cls_tokens.shape[1]
            tokens = stage.norm(torch.cat((cls_tokens, x.flatten(2).transpose(1, 2)), dim=1))
            for block in stage.blocks:
                tokens = block(tokens)
                if index in wanted:
                    found[index] = tokens_to_map(tokens[:, prefix:], height, width)
                index += 1
            cls_tokens, x = tokens[:, :prefix], tokens_to_map(tokens[:, prefix:], height, width)
        return self.forward_head(self.norm(cls_tokens)), [found[i] for i in wanted]


def pit_tiny(
    num_classes: int = 100, *, distilled: bool = False, drop_path_rate: float = 0.1, img_size: int = 224
) -> PiT:
    """PiT-Ti for the ViT table: 4,615,972 parameters at 100 classes (4,641,736 with ``distilled=True``).

    Args:
        num_classes: Number of logits.
        distilled: Add a distillation token and head (timm's PiT-Ti distilled layout).
        drop_path_rate: Stochastic-depth scale: block ``i`` of 12 uses ``drop_path_rate * i / 12``.
        img_size: Input side in pixels; inputs must have exactly this size (224 in the reference).
    """
    return PiT(num_classes=num_classes, distilled=distilled, drop_path_rate=drop_path_rate, img_size=img_size)


def pit_tiny_distilled(num_classes: int = 100, *, drop_path_rate: float = 0.1, img_size: int = 224) -> PiT:
    """:func:`pit_tiny` with the distillation token (4,641,736 parameters at 100 classes)."""
    return pit_tiny(num_classes, distilled=True, drop_path_rate=drop_path_rate, img_size=img_size)
