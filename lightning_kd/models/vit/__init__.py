"""The models of the paper's ViT table: CIFAR-100 ViT students and their CNN guidance teacher.

They follow the LSKD tiny-transformers suite (itself after Li et al., "Locality Guidance for Improving Vision
Transformers on Tiny Datasets", ECCV 2022): the students see CIFAR images resized to 224 px; a ResNet-56 trained
at 32 px guides them. Parameter counts at 100 classes, equal to the reference's:

============================  ===========  ====================================================
builder                       parameters   source
============================  ===========  ====================================================
``deit_tiny``                  5,543,716   timm ``VisionTransformer`` (DeiT-Ti settings)
``deit_tiny_distilled``        5,563,400   timm ``VisionTransformerDistilled``
``t2t_vit_7``                  4,024,394   this package (timm has no T2T-ViT); trainable ones
``pit_tiny``                   4,615,972   timm ``PoolingVisionTransformer`` (PiT-Ti settings)
``pit_tiny_distilled``         4,641,736   timm, with a distillation token (none in the reference)
``pvt_tiny``                  12,767,588   this package (timm has PVT v2 only)
``resnet56_pycls``               861,620   this package (pycls layout of the CIFAR ResNet-56)
============================  ===========  ====================================================

Every model has ``num_classes``, a logits-only ``forward``, ``forward_intermediates(x, indices=None)`` returning
``(logits, [feature maps (B, C, H, W)])`` for the blocks (stages, for the ResNet) the reference's locality guidance
matches by default (``reference_indices``), and ``forward_heads(x)`` returning the class and distillation heads'
logits (an error without a distillation token). ``lightning_kd.models.create_model`` builds them by name; they are
not in ``list_models()``. The transformers need timm (``pip install "lightning-kd[timm]"``); the builders are
imported on first use, so importing this package does not import timm.
"""

from __future__ import annotations

import importlib
from typing import Any

# builder name -> module of this package defining it
_BUILDERS = {
    "deit_tiny": "deit",
    "deit_tiny_distilled": "deit",
    "t2t_vit_7": "t2t",
    "pit_tiny": "pit",
    "pit_tiny_distilled": "pit",
    "pvt_tiny": "pvt",
    "resnet56_pycls": "resnet_pycls",
}

__all__ = sorted(_BUILDERS)


def __getattr__(name: str) -> Any:
    # PEP 562: a builder's module (and timm, for the transformers) is imported when the builder is first asked for
    if name in _BUILDERS:
        return getattr(importlib.import_module(f"{__name__}.{_BUILDERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
