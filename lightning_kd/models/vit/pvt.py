"""PVT-Tiny (Wang et al., "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions", ICCV 2021), version 1, as the LSKD tiny-transformers suite defines it for CIFAR-100 (inputs resized
to 224 px). timm has only PVT v2, whose blocks differ (depthwise-conv MLP, overlapping patch embedding).

Four stages, each a non-overlapping patch embedding (convolution + LayerNorm; patch 4, then 2, 2, 2: 224 px ->
56, 28, 14, 7) with learned position embeddings and two blocks, at widths 64, 128, 320, 512 (1, 2, 5, 8 heads,
MLP ratios 8, 8, 4, 4). Attention reads its keys and values from a map shrunk by a strided convolution of ratio
8, 4, 2, 1 (spatial-reduction attention). A class token joins the tokens in the last stage only.

Parameter count at 100 classes: 12,767,588, equal to the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from lightning_kd.models.vit._common import (
    LN_EPS,
    init_transformer_weights,
    no_distillation_token,
    resolve_indices,
    tokens_to_map,
)

__all__ = ["PVT", "pvt_tiny"]


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from the token map shrunk ``sr_ratio`` times per side.

    With N queries on an H x W map, attention costs N * H * W / sr_ratio^2 instead of N^2.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Width {dim} is not divisible by {num_heads} heads.")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr: nn.Conv2d | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``; with reduction, the N tokens must be exactly the ``height x width`` map."""
        batch, num_tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).reshape(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        source = x
        if self.sr is not None:
            source = self.norm(self.sr(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2))
        k, v = self.kv(source).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # scale head_dim^-0.5, as the reference
        return self.proj(attended.transpose(1, 2).reshape(batch, num_tokens, dim))


class PVTBlock(nn.Module):
    """Pre-norm block: x + drop_path(SRA(LN(x))), then x + drop_path(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PVTStage(nn.Module):
    """Patch embedding (stride-``patch`` convolution + LayerNorm), position embeddings, then the blocks."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        *,
        patch: int,
        grid: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        drop_paths: Sequence[float],
        class_token: bool,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.embed_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + int(class_token), dim))
        self.blocks = nn.ModuleList(PVTBlock(dim, num_heads, mlp_ratio, sr_ratio, rate) for rate in drop_paths)

    def embed(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``(B, C_in, H, W)`` -> tokens ``(B, [1 +] h * w, dim)`` with position embeddings, and ``(h, w)``."""
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        tokens = self.embed_norm(x.flatten(2).transpose(1, 2))
        prefix = 0 if self.cls_token is None else 1
        pos_embed = self.pos_embed[:, prefix:]
        if (height, width) != (self.grid, self.grid):
            # the reference resizes the learned embeddings bilinearly for other input sizes
            grid_embed = tokens_to_map(pos_embed, self.grid, self.grid)
            grid_embed = F.interpolate(grid_embed, size=(height, width), mode="bilinear", align_corners=False)
            pos_embed = grid_embed.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
            pos_embed = torch.cat((self.pos_embed[:, :1], pos_embed), dim=1)
        return tokens + pos_embed, height, width


class PVT(nn.Module):
    """PVT v1 with the project's model contract (logits-only ``forward``, block features).

    Args:
        num_classes: Number of logits.
        drop_path_rate: Stochastic-depth rate of the last block (linear from 0 over all 8 blocks).
        img_size: Input side in pixels the position embeddings are sized for (other sizes resize them).
    """

    # The reference's INTER_STUDENT_INDEX for PVT: the first block of stage 1, the last of stage 2, the last of
    # stage 4, counted over all 8 blocks.
    reference_indices: tuple[int, ...] = (0, 3, 7)
    # forward_intermediates returns (logits, features): lightning_kd.features reads both from one pass
    intermediates_with_logits: bool = True

    def __init__(self, *, num_classes: int = 100, drop_path_rate: float = 0.1, img_size: int = 224) -> None:
        super().__init__()
        self.num_classes = num_classes
        dims, patches, heads = (64, 128, 320, 512), (4, 2, 2, 2), (1, 2, 5, 8)
        mlp_ratios, sr_ratios, depths = (8, 8, 4, 4), (8, 4, 2, 1), (2, 2, 2, 2)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, in_chans, grid = [], 3, img_size
        for i, dim in enumerate(dims):
            grid //= patches[i]
            stages.append(
                PVTStage(
                    in_chans,
                    dim,
                    patch=patches[i],
                    grid=grid,
                    num_heads=heads[i],
                    mlp_ratio=mlp_ratios[i],
                    sr_ratio=sr_ratios[i],
                    drop_paths=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    class_token=i == len(dims) - 1,
                )
            )
            in_chans = dim
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=LN_EPS)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(init_transformer_weights)
        for stage in self.stages:
            nn.init.trunc_normal_(stage.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.stages[-1].cls_token, std=0.02)

    def _run(self, x: Tensor, wanted: Sequence[int] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        found: dict[int, Tensor] = {}
        index = 0
        for stage in self.stages:
            tokens, height, width = stage.embed(x)
            prefix = tokens.shape[1] - height * width  # the class token, in the last stage
            for block in stage.blocks:
                tokens = block(tokens, height, width)
                if index in wanted:
                    found[index] = tokens_to_map(tokens[:, prefix:], height, width)
                index += 1
            x = tokens_to_map(tokens[:, prefix:], height, width)
        return self.head(self.norm(tokens[:, 0])), found

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(B, num_classes)``, read from the normed class token."""
        return self._run(x)[0]

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Not available: PVT has no distillation token."""
        raise no_distillation_token("pvt_tiny")

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Return the logits and the outputs of the blocks ``indices`` (default :attr:`reference_indices`).

        Returns:
            ``(logits, features)``: each feature is a block's patch tokens (class token dropped) on its stage's
            grid; at 224 px blocks 0-1 give ``(B, 64, 56, 56)``, 2-3 ``(B, 128, 28, 28)``, 4-5
            ``(B, 320, 14, 14)``, 6-7 ``(B, 512, 7, 7)``.
        """
        wanted = resolve_indices(indices, sum(len(stage.blocks) for stage in self.stages), self.reference_indices)
        logits, found = self._run(x, wanted)
        return logits, [found[i] for i in wanted]


def pvt_tiny(num_classes: int = 100, *, drop_path_rate: float = 0.1, img_size: int = 224) -> PVT:
    """PVT-Tiny (v1) for the ViT table: 12,767,588 parameters at 100 classes."""
    return PVT(num_classes=num_classes, drop_path_rate=drop_path_rate, img_size=img_size)
