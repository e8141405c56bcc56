"""Shared feature/head contract for the model zoo (timm-style ``forward_features`` / ``forward_head``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn


class FeatureClassifier(nn.Module):
    """Base class fixing how every zoo model splits into features, pooling and classifier.

    Subclasses implement :meth:`forward_intermediates` (the reference "feats" list) and
    :meth:`get_classifier`; they override :meth:`_pre_pool` when layers sit between the last stage and
    the global pooling (e.g. WRN's final BN-ReLU).

    Pooling is a global average. The reference code uses fixed-size pools (``AvgPool2d(8)``,
    ``avg_pool2d(out, 4)``, ...) that cover the whole map at 32 px, so logits are identical there,
    while global pooling also accepts other input sizes.
    """

    num_classes: int

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Return the stage outputs, in the order of the reference ``feats["feats"]`` list."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer."""
        raise NotImplementedError

    def _stem_and_stages(self, x: Tensor, stages: Iterable[nn.Module]) -> list[Tensor]:
        """``[relu(bn1(conv1(x))), stage_1(...), stage_2(...), ...]``: the feats of the conv-BN-ReLU-stem families."""
        feats = [F.relu(self.bn1(self.conv1(x)))]
        for stage in stages:
            feats.append(stage(feats[-1]))
        return feats

    def _pre_pool(self, x: Tensor) -> Tensor:
        # Identity for most families; overridden where the reference applies layers after the last stage.
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last feature map before global pooling, shape ``(N, C, H, W)``."""
        return self._pre_pool(self.forward_intermediates(x)[-1])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool a feature map and classify it.

        Args:
            x: Output of :meth:`forward_features`, shape ``(N, C, H, W)``.
            pre_logits: Return the pooled ``(N, C)`` vector instead of the logits.

        Returns:
            The logits ``(N, num_classes)``, or the pooled features ``(N, C)`` with ``pre_logits``.
        """
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits, shape ``(N, num_classes)``."""
        return self.forward_head(self.forward_features(x))
