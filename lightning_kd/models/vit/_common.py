"""Pieces shared by the ViT-table models: block-index checks, token-to-map reshapes, the heads error, init."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

# The reference builds every transformer LayerNorm with this epsilon (its ``TRANSFORMER.LN_EPS``).
LN_EPS = 1e-6


def resolve_indices(indices: Sequence[int] | None, depth: int, reference: Sequence[int]) -> list[int]:
    """Block indices to return features for: ``reference`` when ``indices`` is None, negatives counted from the end.

    Raises:
        ValueError: For an empty selection or an index outside ``[-depth, depth)``, naming the depth.
    """
    chosen = list(reference if indices is None else indices)
    if not chosen:
        raise ValueError("indices must name at least one block.")
    resolved = []
    for index in chosen:
        if isinstance(index, bool) or not isinstance(index, int) or not -depth <= index < depth:
            raise ValueError(f"Block index {index!r} is out of range for a model of {depth} blocks (0..{depth - 1}).")
        resolved.append(index % depth)
    return resolved


def tokens_to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """``(B, H * W, C)`` spatial tokens (no class/distillation tokens) -> a ``(B, C, H, W)`` feature map."""
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def no_distillation_token(name: str) -> RuntimeError:
    """The error ``forward_heads`` raises on a model without a distillation token."""
    return RuntimeError(
        f"{name} has no distillation token, so it has a single head: forward_heads needs a model built with "
        "distilled=True (DeiT, PiT). Use forward(x) for its logits."
    )


def init_transformer_weights(module: nn.Module) -> None:
    """The reference's init for the ViTs it defines itself: linear weights N(0, 0.02^2), zero biases, unit LayerNorms.

    (Its ``trunc_normal_`` cuts at +-2, a hundred standard deviations out, so the truncation changes nothing.)
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
