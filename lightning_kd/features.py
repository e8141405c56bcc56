"""Intermediate features beside the logits, from one forward pass: what a feature loss reads.

A :class:`~lightning_kd.losses.FeatureLoss` declares the layers it needs from the student and the teacher
(``student_layers`` / ``teacher_layers``): stage or block indices (``int``) or submodule names (``str``), never both
in one list. :func:`feature_network` turns a network and such a list into a module whose ``forward(x)`` returns
``(logits, [feature, ...])`` in one pass:

- **indices** read the network's ``forward_intermediates``: for the CIFAR zoo (:class:`~lightning_kd.models.cifar.
  _base.FeatureClassifier`) entry ``i`` of its feature list ``[stem, stage 1, stage 2, ...]`` (the reference
  "feats"), the logits from the last entry through the network's own pooling and classifier; for networks that
  declare ``intermediates_with_logits = True`` (this package's vision transformers) their
  ``forward_intermediates(x, indices)``, which returns ``(logits, features)`` with token maps on their ``(B, C, h, w)``
  grid;
- **names** take the output of ``network.get_submodule(name)`` through ``torch.fx`` (torchvision's
  ``create_feature_extractor``), so the returned module is a graph over the same submodules (shared parameters).

Both kinds are plain ``nn.Module`` graphs that ``torch.fx`` can trace, so a teacher with features can still be run as
a BatchNorm-folded copy (:func:`~lightning_kd.models.fold.fold_batchnorm`). The returned module holds ``network`` as a
submodule: keep it out of a LightningModule's registered children (the module keeps it in a tuple), or its weights
would be saved twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_kd.models.cifar._base import FeatureClassifier

__all__ = ["IndexedFeatures", "NamedFeatures", "feature_network", "layer_kind"]

Layer = int | str


def layer_kind(layers: Sequence[Layer], role: str) -> str:
    """``"index"`` or ``"name"``: what ``layers`` holds.

    Raises:
        ValueError: an empty list, or indices and names mixed.
    """
    if not layers:
        raise ValueError(f"the {role}'s feature layers are empty: name at least one layer index or submodule name.")
    kinds = {type(layer) for layer in layers}
    if kinds == {int}:
        return "index"
    if kinds == {str}:
        return "name"
    raise ValueError(
        f"the {role}'s feature layers {list(layers)} mix indices and names: give all as stage/block indices "
        "(forward_intermediates) or all as submodule names."
    )


class IndexedFeatures(nn.Module):
    """``forward(x) -> (logits, [features at indices])`` through the network's ``forward_intermediates``.

    Args:
        network: a zoo model (``FeatureClassifier``) or a network with ``intermediates_with_logits = True``.
        indices: positions in the network's list of intermediate features (negative ones count from the end).

    Raises:
        TypeError: the network has no ``forward_intermediates`` this package knows.
    """

    def __init__(self, network: nn.Module, indices: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(network, FeatureClassifier) and not getattr(network, "intermediates_with_logits", False):
            raise TypeError(
                f"{type(network).__name__} has no forward_intermediates whose layout this package knows (the CIFAR zoo "
                "and lightning_kd.models.vit have): give its feature layers as submodule names instead (e.g. "
                "'layer2'; `[name for name, _ in network.named_modules()]` lists them)."
            )
        self.network = network
        self.indices = tuple(int(i) for i in indices)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        network = self.network
        if isinstance(network, FeatureClassifier):
            features = network.forward_intermediates(x)
            # the network's own forward: pooling and classifier on the last stage (one pass for both)
            logits = network.forward_head(network._pre_pool(features[-1]))
            return logits, [features[i] for i in self.indices]
        return network.forward_intermediates(x, list(self.indices))


class NamedFeatures(nn.Module):
    """``forward(x) -> (logits, [outputs of the named submodules])``: an ``fx`` graph over ``network``'s submodules.

    Args:
        network: any network ``torch.fx`` can trace.
        names: submodule names (``network.get_submodule(name)`` must exist).

    Raises:
        ValueError: a name that is no submodule of ``network`` (the message lists a few that are), or a network
            ``torch.fx`` cannot trace.
    """

    def __init__(self, network: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        known = {name for name, _ in network.named_modules() if name}
        missing = [name for name in names if name not in known]
        if missing:
            sample = ", ".join(sorted(known)[:12])
            raise ValueError(
                f"{type(network).__name__} has no submodule(s) {missing}: feature layers must be submodule names "
                f"such as {sample}, ..."
            )
        self.names = tuple(names)
        output = _output_node(network)
        try:
            self.graph_module = create_feature_extractor(
                network, return_nodes={**{name: name for name in names}, output: "__logits__"}
            )
        except Exception as err:  # the tracer raises several types; name the network and the reason
            raise ValueError(
                f"Cannot take named features of {type(network).__name__}: torch.fx cannot trace its forward "
                f"({type(err).__name__}: {err}). Use layer indices if it has forward_intermediates."
            ) from err

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        out = self.graph_module(x)
        return out["__logits__"], [out[name] for name in self.names]


def _output_node(network: nn.Module) -> str:
    """The name of the node whose value ``network.forward`` returns (in torchvision's feature-extraction naming)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    _, eval_nodes = get_graph_node_names(network)
    return eval_nodes[-1]


def feature_network(network: nn.Module, layers: Sequence[Layer], role: str = "network") -> nn.Module:
    """A module computing ``(logits, [features of layers])`` of ``network`` in one forward pass.

    Args:
        network: the student or a teacher network.
        layers: all indices (``forward_intermediates``) or all submodule names.
        role: how errors name the network (``"student"``, ``"teacher"``).
    """
    if layer_kind(layers, role) == "index":
        return IndexedFeatures(network, [int(i) for i in layers])
    return NamedFeatures(network, [str(n) for n in layers])
