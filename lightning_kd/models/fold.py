"""Fold inference-mode BatchNorm into the convolution before it: the same function in fewer kernels.

A frozen teacher always runs in eval mode, where ``BatchNorm`` is a fixed per-channel affine map. After a
convolution it can be merged into that convolution's weights, which removes one kernel launch (and its framework
dispatch) per BatchNorm from every teacher forward. At CIFAR sizes a GPU training step is bound by such per-op
costs (``docs/performance.md``).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from typing_extensions import override

__all__ = ["count_batchnorms", "fold_batchnorm", "hooked_modules"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def count_batchnorms(network: nn.Module) -> int:
    """Number of ``BatchNorm`` layers in ``network``."""
    return sum(isinstance(m, _BATCHNORMS) for m in network.modules())


def hooked_modules(network: nn.Module) -> frozenset[str]:
    """Names of the modules of ``network`` (``""``: ``network`` itself) that have a forward, forward-pre or backward
    hook."""
    return frozenset(name for name, module in network.named_modules() if _has_hooks(module))


def fold_batchnorm(network: nn.Module) -> nn.Module:
    r"""An inference copy of ``network`` with every convolution -> BatchNorm pair folded into one convolution.

    For a convolution with weight :math:`W` and bias :math:`b` followed by an eval-mode BatchNorm with running
    mean :math:`\mu`, running variance :math:`\sigma^2`, scale :math:`\gamma`, shift :math:`\beta` and
    :math:`\epsilon`, per output channel :math:`c`:

    .. math::
        W'_c = W_c \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
        b'_c = (b_c - \mu_c) \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    The network is traced with ``torch.fx`` and the pairs are found in its data flow (a convolution whose output
    only feeds the BatchNorm), so any architecture built from standard layers works. BatchNorms that do not follow
    a convolution (pre-activation blocks such as WRN's) stay as they are. ``Linear`` -> ``BatchNorm1d`` pairs fold the
    same way. The folding is computed in float32 and the copy gets ``network``'s dtype, device and memory format;
    ``network`` itself is not changed. The copy is for inference only: it is in eval mode and has no gradients.

    Hooks keep working. A module that has a forward, forward-pre or backward hook when the copy is made (``network``
    itself included) is kept as one module of the copy, never traced through (its hooks would run on tracing
    proxies) and never folded into a neighbour (its input or output would change): a hooked convolution or
    BatchNorm stays unfolded, a hooked block is folded inside on its own. That module of the copy *shares* the
    original's hook dictionaries, so its hooks fire on every forward of the copy, with the same hook objects
    (``handle.remove()`` on the original removes it from the copy too). The hook's ``module`` argument is the copy's
    module (for a hooked block, a ``torch.fx.GraphModule``). A hook added later to a module that was traced through
    needs a new copy (:class:`~lightning_kd.DistillationModule` makes one at the next epoch start).

    Args:
        network: the network; it is traced in eval mode (its current mode is left as it was).

    Returns:
        A ``torch.fx.GraphModule`` computing the same function (up to float32 rounding, about 1e-7 relative).

    Raises:
        ValueError: the network cannot be traced symbolically (its ``forward`` branches on tensor values or
            sizes); the message names the network's class and the tracer's reason.
    """
    params = list(network.parameters())
    dtype = params[0].dtype if params else torch.float32
    channels_last = any(p.ndim == 4 and _is_channels_last(p) for p in params)
    work = _copy_sharing_hooks(network).float().eval().requires_grad_(False)
    try:
        folded = _fold(work)
    except Exception as err:  # the tracer raises several types (TraceError, TypeError, ...): name them all here
        raise ValueError(
            f"Cannot fold the BatchNorms of {type(network).__name__}: torch.fx cannot trace its forward "
            f"({type(err).__name__}: {err}). Set fold_teacher_bn to false for this network "
            "(--model.init_args.fold_teacher_bn false), or make its forward traceable (torch.fx.wrap a helper "
            "that branches on sizes)."
        ) from err
    folded = folded.to(dtype=dtype).eval().requires_grad_(False)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded


# the per-module hook dictionaries of torch.nn.Module (getattr with a default: older torch has fewer of them)
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
)
_FIRING_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_PAIRS = {
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
}


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, attr, None) for attr in _FIRING_HOOKS)


def _copy_sharing_hooks(network: nn.Module) -> nn.Module:
    """A deep copy of ``network`` whose modules hold the *same* hook dictionaries as the originals.

    A plain deep copy would copy each hook too: a bound-method hook would then store its features on a copy of its
    object, which the user never sees (or fail to copy at all).
    """
    memo: dict[int, Any] = {}
    for module in network.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks is not None:
                memo[id(hooks)] = hooks  # deepcopy returns what the memo holds for an object it meets
    return copy.deepcopy(network, memo)


def _carry_hooks(source: nn.Module, target: nn.Module) -> None:
    for attr in (*_HOOK_DICTS, "_is_full_backward_hook"):
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))


class _HookedLeafTracer(fx.Tracer):
    """Records a call of a hooked module as one node instead of tracing into it (and running its hooks)."""

    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self._leaves = leaves

    @override
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._leaves or super().is_leaf_module(m, module_qualified_name)


def _fold(root: nn.Module) -> fx.GraphModule:
    """Trace ``root`` (hooked submodules as single nodes, each folded on its own) and fold its pairs."""
    leaves = {id(m) for m in root.modules() if m is not root and _has_hooks(m)}
    graph = _HookedLeafTracer(leaves).trace(root)
    module = fx.GraphModule(root, graph, type(root).__name__)
    _carry_hooks(root, module)
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    hooked = set()
    for target in calls:
        sub = module.get_submodule(target)
        if id(sub) not in leaves:
            continue
        hooked.add(target)
        if next(sub.children(), None) is not None:  # a hooked block: fold inside it, keep its hooks on the result
            parent, _, name = target.rpartition(".")
            setattr(module.get_submodule(parent), name, _fold(sub))
    for node in list(graph.nodes):
        first = node.args[0] if node.op == "call_module" and len(node.args) == 1 and not node.kwargs else None
        if not isinstance(first, fx.Node) or first.op != "call_module" or len(first.users) > 1:
            continue
        # a module called twice (shared weights) or hooked keeps its own output: only single-use, hook-free pairs
        if {node.target, first.target} & hooked or calls[node.target] > 1 or calls[first.target] > 1:
            continue
        layer, bn = module.get_submodule(first.target), module.get_submodule(node.target)
        if (type(layer), type(bn)) not in _PAIRS or not bn.track_running_stats:
            continue
        if isinstance(layer, nn.Linear):
            if layer.out_features != bn.num_features:
                continue
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            fused = fuse_conv_bn_eval(layer, bn)
        parent, _, name = first.target.rpartition(".")
        setattr(module.get_submodule(parent), name, fused)
        node.replace_all_uses_with(first)
        graph.erase_node(node)
    graph.lint()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


def _is_channels_last(weight: torch.Tensor) -> bool:
    # a 1x1-channel weight is contiguous in both formats: ask for strict NHWC strides
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
