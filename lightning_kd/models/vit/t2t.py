"""T2T-ViT-7 (Yuan et al., "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet", ICCV 2021)
as the LSKD tiny-transformers suite defines it for CIFAR-100 (inputs resized to 224 px). timm has no T2T-ViT.

A tokens-to-token stem re-structurizes the image three times with overlapping unfolds (7x7 stride 4, then twice
3x3 stride 2: 224 px -> a 14x14 grid), with a single-head Performer layer (64-d tokens) between the unfolds and a
linear projection to width 256. Seven standard blocks follow (4 heads, MLP ratio 2, no qkv bias), on a class token
plus the 196 patch tokens with fixed sinusoidal position embeddings.

Parameter count at 100 classes: 4,024,394 trainable, as the reference reports (its ``complexity()`` counts only
parameters that require gradients). The reference also stores two frozen tensors as parameters, the Performer
random features (2 x 32 x 64) and the sinusoidal table (197 x 256); here they are buffers, so the optimizer never
sees them: the random features are saved with the weights, the table is rebuilt from the input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from lightning_kd.models.vit._common import (
    LN_EPS,
    init_transformer_weights,
    no_distillation_token,
    resolve_indices,
    tokens_to_map,
)

__all__ = ["PerformerAttention", "T2TViT", "t2t_vit_7"]


class PerformerAttention(nn.Module):
    """Single-head linear attention with positive orthogonal random features (FAVOR+, Choromanski et al.,
    "Rethinking Attention with Performers", ICLR 2021), changing the token width from ``dim`` to ``out_dim``.

    softmax(q k^T) v is approximated by phi(q) (phi(k)^T v) / (phi(q) sum_s phi(k_s)) with
    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), W an ``(m, out_dim)`` orthogonal matrix scaled by sqrt(m),
    m = ``kernel_ratio * out_dim``; the cost is linear in the number of tokens. As in T2T-ViT, the values are added
    back to the output (the width change rules out the usual residual around the attention).
    """

    def __init__(self, dim: int, out_dim: int, kernel_ratio: float = 0.5) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * out_dim)
        self.proj = nn.Linear(out_dim, out_dim)
        num_features = int(out_dim * kernel_ratio)
        weights = nn.init.orthogonal_(torch.empty(num_features, out_dim)) * math.sqrt(num_features)
        # fixed at initialisation and never trained, but part of the model: saved with the weights
        self.register_buffer("random_features", weights)

    def _feature_map(self, x: Tensor) -> Tensor:
        # (B, N, d) -> (B, N, m); fp32 because of the exponential
        x = x.float()
        projected = x @ self.random_features.t()
        return torch.exp(projected - x.pow(2).sum(-1, keepdim=True) / 2) / math.sqrt(self.random_features.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, dim)`` -> ``(B, N, out_dim)``."""
        k, q, v = self.qkv(x).chunk(3, dim=-1)  # the reference's order: keys, queries, values
        phi_k, phi_q = self._feature_map(k), self._feature_map(q)
        kv = phi_k.transpose(1, 2) @ v.float()  # (B, m, out_dim)
        normalizer = phi_q @ phi_k.sum(dim=1, keepdim=True).transpose(1, 2)  # (B, N, 1)
        attended = (phi_q @ kv) / (normalizer + 1e-8)
        return v + self.proj(attended.to(v.dtype))


class PerformerLayer(nn.Module):
    """Pre-norm Performer attention (width ``dim`` -> ``out_dim``) and a residual MLP of hidden width ``out_dim``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = PerformerAttention(dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(out_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokensToToken(nn.Module):
    """The T2T stem: unfold (soft split), Performer layer, refold to a map, repeat; then project to ``embed_dim``.

    With the reference's kernels (7, 3, 3), strides (4, 2, 2), paddings (2, 1, 1) and 64-d tokens, a 224 px image
    becomes 14 x 14 = 196 tokens.
    """

    def __init__(self, embed_dim: int, token_dim: int = 64, in_chans: int = 3) -> None:
        super().__init__()
        self.splits = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) of each unfold
        widths = [in_chans * 7 * 7, token_dim * 3 * 3]  # input width of each Performer layer
        self.attention = nn.ModuleList([PerformerLayer(width, token_dim) for width in widths])
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)

    def grid(self, size: int) -> int:
        """Side of the token grid for a ``size`` px input."""
        for kernel, stride, padding in self.splits:
            size = (size + 2 * padding - kernel) // stride + 1
        return size

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, grid(H) * grid(W), embed_dim)``."""
        height, width = x.shape[-2:]
        for i, (kernel, stride, padding) in enumerate(self.splits):
            if i > 0:
                x = tokens_to_map(self.attention[i - 1](x), height, width)
            height = (height + 2 * padding - kernel) // stride + 1
            width = (width + 2 * padding - kernel) // stride + 1
            x = F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)  # (B, H' * W', C * k * k)
        return self.project(x)


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """Fixed position embeddings (Vaswani et al., 2017): sin/cos of ``pos / 10000^(2i / dim)``, ``(1, num, dim)``."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    frequency = 10000.0 ** (-(torch.arange(dim) // 2 * 2).double() / dim)
    angles = position * frequency  # (num, dim); columns 2i and 2i + 1 share a frequency
    table = torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos())
    return table.float().unsqueeze(0)


class T2TViT(nn.Module):
    """T2T-ViT: the tokens-to-token stem, a class token and ``depth`` standard transformer blocks.

    Args:
        num_classes: Number of logits.
        embed_dim: Token width of the backbone.
        depth: Number of backbone blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        drop_path_rate: Stochastic-depth rate of the last block (linear from 0 at the first).
        img_size: Input side in pixels; inputs must have exactly this size.
    """

    # The reference's INTER_STUDENT_INDEX for T2T-ViT-7: the first, middle and last blocks.
    reference_indices: tuple[int, ...] = (0, 3, 6)
    # forward_intermediates returns (logits, features): lightning_kd.features reads both from one pass
    intermediates_with_logits: bool = True

    def __init__(
        self,
        *,
        num_classes: int = 100,
        embed_dim: int = 256,
        depth: int = 7,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.img_size = img_size
        self.tokens_to_token = TokensToToken(embed_dim)
        self.grid_size = self.tokens_to_token.grid(img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sinusoid_table(self.grid_size**2 + 1, embed_dim), persistent=False)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        norm_layer = partial(nn.LayerNorm, eps=LN_EPS)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=False, drop_path=rate, norm_layer=norm_layer)
            for rate in rates
        )
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(init_transformer_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _tokens(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"T2T-ViT built for {self.img_size} px inputs got {tuple(x.shape[-2:])}.")
        tokens = self.tokens_to_token(x)
        return torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1) + self.pos_embed

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(B, num_classes)``, read from the normed class token."""
        tokens = self._tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Not available: T2T-ViT has no distillation token."""
        raise no_distillation_token("t2t_vit_7")

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Return the logits and the outputs of the blocks ``indices`` (default :attr:`reference_indices`).

        Returns:
            ``(logits, features)``: each feature is a block's patch tokens (class token dropped, before the final
            norm) on the token grid, ``(B, 256, 14, 14)`` at 224 px.
        """
        wanted = resolve_indices(indices, len(self.blocks), self.reference_indices)
        found: dict[int, Tensor] = {}
        tokens = self._tokens(x)
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in wanted:
                found[index] = tokens_to_map(tokens[:, 1:], self.grid_size, self.grid_size)
        return self.head(self.norm(tokens[:, 0])), [found[i] for i in wanted]


def t2t_vit_7(num_classes: int = 100, *, drop_path_rate: float = 0.1, img_size: int = 224) -> T2TViT:
    """T2T-ViT-7 for the ViT table: 4,024,394 trainable parameters at 100 classes.

    Width 256, 7 blocks of 4 heads, MLP ratio 2 (the reference's t2t-7_c100 configs).
    """
    return T2TViT(num_classes=num_classes, drop_path_rate=drop_path_rate, img_size=img_size)
