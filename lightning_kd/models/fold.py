"""Fold inference-mode BatchNorm into the convolution before it: the same function in fewer kernels.

A frozen teacher always runs in eval mode, where ``BatchNorm`` is a fixed per-channel affine map. After a
convolution it can be merged into that convolution's weights, which removes one kernel launch (and its framework
dispatch) per BatchNorm from every teacher forward. At CIFAR sizes a GPU training step is bound by such per-op
costs (``docs/performance.md``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

__all__ = ["count_batchnorms", "fold_batchnorm"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def count_batchnorms(network: nn.Module) -> int:
    """Number of ``BatchNorm`` layers in ``network``."""
    return sum(isinstance(m, _BATCHNORMS) for m in network.modules())


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
    a convolution (pre-activation blocks such as WRN's) stay as they are. The folding is computed in float32 and the
    copy gets ``network``'s dtype, device and memory format; ``network`` itself is not changed. The copy is for
    inference only: it is in eval mode and has no gradients.

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
    work = copy.deepcopy(network).float().eval().requires_grad_(False)
    try:
        folded = fuse(work, inplace=True)
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


def _is_channels_last(weight: torch.Tensor) -> bool:
    # a 1x1-channel weight is contiguous in both formats: ask for strict NHWC strides
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
