"""Intermediate-feature distillation: locality guidance, FitNet hints and attention transfer.

The math lives in :mod:`.functional` (:func:`~.functional.locality_guidance`, :func:`~.functional.hint_mse`,
:func:`~.functional.attention_transfer`); the classes here hold what is state (the learnable regressors) and
settings (which layers, which transform, the weight).

**The interface a training module honours.** A :class:`FeatureLoss` declares the features it needs in
:attr:`~FeatureLoss.student_layers` and :attr:`~FeatureLoss.teacher_layers`, two tuples of the same length whose
entries are layer indices (``int``) or layer names (``str``). An ``int`` ``i`` is entry ``i`` of the model's list of
intermediate features: for the CIFAR zoo that is ``forward_intermediates(x)`` (``[stem, stage 1, stage 2, ...]``,
the reference "feats" list), for a vision transformer the output of block ``i``. A ``str`` names a submodule
(``model.get_submodule(name)``) whose output is taken. At every training step the module gathers, from the same
forward passes that give the logits, the student's features with gradients and the teacher's under
``torch.no_grad()``, each as a ``(B, C, H, W)`` map in the declared order (transformer tokens reshaped to their
``(B, C, h, w)`` grid, class and distillation tokens dropped), and calls ``loss(student_features,
teacher_features)``. The returned terms (``"guidance"``, ``"hint"`` or ``"at"``: names no logit loss uses) are
already weighted fp32 scalars to add to the logit loss's terms and log as ``train/<term>``. The loss's parameters
(the regressors) are optimized with the student's and saved in checkpoints with it; :meth:`FeatureLoss.hparams_dict`
is its primitive record, as :meth:`~lightning_kd.losses.DistillationLoss.hparams_dict` is for logit losses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses.base import check_weight, constructor_record, init_argument_names
from lightning_kd.losses.functional import (
    GUIDANCE_TRANSFORMS,
    attention_transfer,
    hint_mse,
    locality_guidance,
    resize_to_larger,
)

#: A layer spec: an index into the model's intermediate features, or a submodule name.
Layer = int | str
Channels = int | Sequence[int]


class FeatureLoss(nn.Module, ABC):
    """Base class of the intermediate-feature distillation strategies.

    A subclass declares the features it needs (:attr:`student_layers`, :attr:`teacher_layers`, matched pairwise) and
    computes named, already-weighted fp32 scalar terms from them; see the module docstring for how a training module
    drives it. As for logit losses, the record of a loss is read from its constructor signatures: every named
    ``__init__`` argument is stored under its own name as a primitive (tuples are recorded as lists).

    Args:
        student_layers: the student's layers, indices or names (a single one may be given bare).
        teacher_layers: the teacher's layers matched to them, the same number.

    Raises:
        ValueError: an empty or malformed layer spec, or different numbers of student and teacher layers.
    """

    #: the name of the (single) term :meth:`forward` returns
    term: ClassVar[str]

    def __init__(self, student_layers: Sequence[Layer] | Layer, teacher_layers: Sequence[Layer] | Layer) -> None:
        super().__init__()
        self.student_layers = _layers("student_layers", student_layers)
        self.teacher_layers = _layers("teacher_layers", teacher_layers)
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(
                f"student_layers {list(self.student_layers)} and teacher_layers {list(self.teacher_layers)} must "
                "have the same length: entry i of one is matched with entry i of the other."
            )

    @property
    def num_pairs(self) -> int:
        """The number of matched (student, teacher) layer pairs."""
        return len(self.student_layers)

    @abstractmethod
    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> dict[str, Tensor]:
        """Compute the loss terms.

        Args:
            student_features: one ``(B, C, H, W)`` map per entry of :attr:`student_layers`, in that order, with
                gradients.
            teacher_features: one map per entry of :attr:`teacher_layers`; never receives gradients.

        Returns:
            Named scalar fp32 terms, already weighted; they add to the logit loss's terms.
        """

    def hparams_dict(self) -> dict[str, Any]:
        """The constructor arguments as primitives, for checkpoint hyperparameters: ``class_path`` and each argument.

        Raises:
            TypeError: a constructor argument is not stored under its name, or its value is not a primitive.
        """
        return constructor_record(self, init_argument_names(type(self), FeatureLoss, include_last=True))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams_dict().items() if k != "class_path")

    def _checked_pairs(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Validate the features (count, rank, batch) and pair them up as fp32, the teacher's detached.

        Call it inside the autocast-disabled region: the casts must not be undone by autocast.
        """
        for side, feats, layers in (
            ("student", student_features, self.student_layers),
            ("teacher", teacher_features, self.teacher_layers),
        ):
            if isinstance(feats, Tensor) or len(feats) != len(layers):
                got = "a single tensor" if isinstance(feats, Tensor) else f"{len(feats)} tensors"
                raise ValueError(
                    f"{type(self).__name__} takes one {side} feature per entry of {side}_layers={list(layers)} "
                    f"({len(layers)}), got {got}: gather the features of exactly those layers, in that order."
                )
            for layer, feat in zip(layers, feats, strict=True):
                if feat.ndim != 4:
                    raise ValueError(
                        f"The {side} feature of layer {layer!r} has shape {tuple(feat.shape)}; {type(self).__name__} "
                        "takes (batch, channels, height, width) maps: reshape transformer tokens (B, N, C) to their "
                        "(B, C, h, w) grid without the class token."
                    )
        batches = {feat.shape[0] for feat in (*student_features, *teacher_features)}
        if len(batches) > 1:
            raise ValueError(
                f"The features have different batch sizes {sorted(batches)}: the student and the teacher must see "
                "the same batch."
            )
        # the teacher is a fixed target: detaching here keeps gradients off it even if a caller forgot no_grad
        return [(s.float(), t.detach().float()) for s, t in zip(student_features, teacher_features, strict=True)]


class _RegressorLoss(FeatureLoss):
    """A feature loss whose student features pass through learnable 1x1-convolution regressors first.

    The regressors live in :attr:`regressors` (an :class:`~torch.nn.ModuleList`, one ``Conv2d(C_s, C_t, 1)`` with
    bias per matched pair), so they are in :meth:`parameters` and the ``state_dict``.
    """

    def _build_regressors(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> None:
        self.regressors = nn.ModuleList(
            nn.Conv2d(c_s, c_t, kernel_size=1) for c_s, c_t in zip(student_channels, teacher_channels, strict=True)
        )

    def _regress(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        """Map the fp32 student feature of pair ``index`` to the teacher's channels (after checking both counts)."""
        conv: nn.Conv2d = self.regressors[index]
        expected = (conv.in_channels, conv.out_channels)
        if (student.shape[1], teacher.shape[1]) != expected:
            raise ValueError(
                f"{type(self).__name__} pair {index} (student layer {self.student_layers[index]!r}, teacher layer "
                f"{self.teacher_layers[index]!r}) was built for {expected[0]} student and {expected[1]} teacher "
                f"channels, got {student.shape[1]} and {teacher.shape[1]}: set student_channels / teacher_channels "
                "to the channel counts of those layers."
            )
        # fp32 weights even when the module was cast to half precision (``.float()`` is free on fp32 tensors)
        bias = conv.bias.float() if conv.bias is not None else None
        return F.conv2d(student, conv.weight.float(), bias)


class LocalityGuidance(_RegressorLoss):
    r"""Locality guidance of a vision transformer by a CNN (Li et al., ECCV 2022, arXiv:2207.10026).

    .. math::
        \mathcal{L}_{guidance} = w \sum_{i} \mathrm{MSE}\big(\phi(s'_i), \phi(t'_i)\big),\quad
        (s'_i, t'_i) = \mathrm{resize}_{\max}\big(r_i(s_i), t_i\big)

    for each matched pair :math:`(s_i, t_i)` of student and teacher feature maps: both are resized bilinearly to the
    larger grid, transformed by :math:`\phi` and compared by the mean squared error
    (:func:`~lightning_kd.losses.functional.locality_guidance`). ``transform`` picks :math:`\phi` and :math:`r_i`:

    - ``"linear"``: :math:`\phi` is the identity and :math:`r_i` a learnable 1x1 convolution (with bias) from the
      student's channels to the teacher's, applied before the resize;
    - ``"attention"``: :math:`\phi` is the normalized spatial attention map (channel mean of :math:`F^2`), no
      regressor;
    - ``"similarity"``: :math:`\phi` is the row-normalized ``(B, B)`` Gram matrix of the flattened features, no
      regressor.

    The defaults are the paper's CIFAR-100 setting (DeiT-Tiny guided by ResNet-56): student blocks 0, 6 and 11
    matched with the teacher's three stages, ``"linear"``, weight 2.5. The teacher's stages are entries 1, 2, 3 of
    the zoo's ``forward_intermediates`` list (entry 0 is the stem output, which the reference does not use).

    Args:
        student_channels: channels of each student layer (one number for all, as a ViT's constant width, or one per
            layer); required for ``"linear"``, unused otherwise.
        teacher_channels: channels of each teacher layer (one number or one per layer); required for ``"linear"``.
        student_layers: the student layers (indices or names).
        teacher_layers: the teacher layers matched to them.
        transform: ``"linear"``, ``"attention"`` or ``"similarity"``.
        weight: the weight :math:`w \ge 0` of the summed term.

    Raises:
        ValueError: an unknown transform, layer lists of different lengths, missing or mismatched channel counts for
            ``"linear"``, or a negative weight.

    Example::

        >>> import torch
        >>> loss = LocalityGuidance(student_channels=192, teacher_channels=(16, 32, 64))
        >>> student = [torch.randn(2, 192, 8, 8) for _ in range(3)]
        >>> teacher = [torch.randn(2, 16, 32, 32), torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8)]
        >>> sorted(loss(student, teacher))
        ['guidance']
    """

    term = "guidance"

    def __init__(
        self,
        student_channels: Channels | None = None,
        teacher_channels: Channels | None = None,
        student_layers: Sequence[Layer] | Layer = (0, 6, 11),
        teacher_layers: Sequence[Layer] | Layer = (1, 2, 3),
        transform: str = "linear",
        weight: float = 2.5,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        if transform not in GUIDANCE_TRANSFORMS:
            raise ValueError(
                f"Unknown locality-guidance transform {transform!r}: use one of {list(GUIDANCE_TRANSFORMS)}."
            )
        check_weight("weight", weight)
        self.transform = transform
        self.weight = float(weight)
        self.student_channels = _channels("student_channels", student_channels, self.num_pairs, transform)
        self.teacher_channels = _channels("teacher_channels", teacher_channels, self.num_pairs, transform)
        if transform == "linear":
            self._build_regressors(self.student_channels, self.teacher_channels)
        else:
            self.regressors = nn.ModuleList()  # nothing to learn; kept so every instance has the attribute

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> dict[str, Tensor]:
        # fp32 whatever the input dtype: a Gram entry sums C*H*W products, and squared rows of them overflow fp16
        with torch.autocast(device_type=_device_type(student_features), enabled=False):
            total = None
            for i, (s, t) in enumerate(self._checked_pairs(student_features, teacher_features)):
                if self.transform == "linear":
                    s = self._regress(i, s, t)  # the reference regresses before resizing
                term = locality_guidance(s, t, self.transform)
                total = term if total is None else total + term
            return {self.term: self.weight * total}


class FitNet(_RegressorLoss):
    r"""FitNet hints (Romero et al., ICLR 2015, arXiv:1412.6550): regress student features onto the teacher's.

    .. math::
        \mathcal{L}_{hint} = w \sum_i \mathrm{MSE}\big(r_i(s_i)', t_i'\big)

    with :math:`r_i` a learnable 1x1 convolution (with bias) from the student's channels to the teacher's and
    :math:`'` the bilinear resize of both maps to the larger grid when their grids differ.

    The defaults are the usual CIFAR-100 setting (mdistiller): one hint at entry 2 of both models' intermediate
    features (the output of stage 2 in the zoo's ``forward_intermediates``), weight 100, on top of the plain
    cross-entropy of a logit loss. mdistiller's regressor is a convolution followed by batch norm and ReLU whose
    kernel also matches the grids; this one is the linear 1x1 regressor of the paper's convolutional variant.

    Args:
        student_channels: channels of each student layer (one number or one per layer).
        teacher_channels: channels of each teacher layer (one number or one per layer).
        student_layers: the student layers (indices or names).
        teacher_layers: the teacher layers matched to them.
        weight: the weight :math:`w \ge 0` of the summed term.

    Raises:
        ValueError: layer lists of different lengths, mismatched channel counts, or a negative weight.
    """

    term = "hint"

    def __init__(
        self,
        student_channels: Channels,
        teacher_channels: Channels,
        student_layers: Sequence[Layer] | Layer = (2,),
        teacher_layers: Sequence[Layer] | Layer = (2,),
        weight: float = 100.0,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        check_weight("weight", weight)
        self.weight = float(weight)
        self.student_channels = _channels("student_channels", student_channels, self.num_pairs, "linear")
        self.teacher_channels = _channels("teacher_channels", teacher_channels, self.num_pairs, "linear")
        self._build_regressors(self.student_channels, self.teacher_channels)

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> dict[str, Tensor]:
        with torch.autocast(device_type=_device_type(student_features), enabled=False):
            total = None
            for i, (s, t) in enumerate(self._checked_pairs(student_features, teacher_features)):
                term = hint_mse(*resize_to_larger(self._regress(i, s, t), t))
                total = term if total is None else total + term
            return {self.term: self.weight * total}


class AT(FeatureLoss):
    r"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928).

    .. math::
        \mathcal{L}_{at} = \beta \sum_i \frac{1}{B\,HW} \big\lVert Q(s_i) - Q(t_i) \big\rVert_2^2,\quad
        Q(F) = \frac{\mathrm{vec}(\mathrm{mean}_c |F_c|^p)}{\lVert \mathrm{vec}(\mathrm{mean}_c |F_c|^p) \rVert_2}

    per sample (:func:`~lightning_kd.losses.functional.attention_transfer`); stages of different grids are compared
    on the smaller one (adaptive average pooling). Nothing is learned, so the channel counts need not agree.

    The defaults are the usual CIFAR-100 setting (mdistiller): :math:`p = 2` and :math:`\beta = 1000` over entries
    1, 2, 3 of both models' intermediate features (the three stage outputs of the zoo's CIFAR ResNets; models with
    four stages add entry 4).

    Args:
        student_layers: the student layers (indices or names).
        teacher_layers: the teacher layers matched to them.
        p: the exponent :math:`p \ge 1` of the attention map (below 1 its gradient is infinite at zero activations).
        weight: :math:`\beta \ge 0`, the weight of the summed term.

    Raises:
        ValueError: layer lists of different lengths, ``p < 1`` or a negative weight.
    """

    term = "at"

    def __init__(
        self,
        student_layers: Sequence[Layer] | Layer = (1, 2, 3),
        teacher_layers: Sequence[Layer] | Layer = (1, 2, 3),
        p: float = 2.0,
        weight: float = 1000.0,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
            raise ValueError(f"p must be a number >= 1, got {p!r}. The paper uses p=2.")
        check_weight("weight", weight)
        self.p = float(p)
        self.weight = float(weight)

    def forward(self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]) -> dict[str, Tensor]:
        with torch.autocast(device_type=_device_type(student_features), enabled=False):
            total = None
            for s, t in self._checked_pairs(student_features, teacher_features):
                term = attention_transfer(s, t, self.p)
                total = term if total is None else total + term
            return {self.term: self.weight * total}


def _layers(name: str, value: Sequence[Layer] | Layer) -> tuple[Layer, ...]:
    """``value`` as a non-empty tuple of ints and non-empty strings, or a ``ValueError`` naming ``name``."""
    layers = (value,) if isinstance(value, (int, str)) else tuple(value)
    bad = [v for v in layers if isinstance(v, bool) or not isinstance(v, (int, str)) or v == ""]
    if not layers or bad:
        raise ValueError(
            f"{name} must be a non-empty sequence of layer indices (int) or submodule names (str), got {value!r}; "
            "e.g. (0, 6, 11) or ('layer1', 'layer2')."
        )
    return layers


def _channels(name: str, value: Channels | None, num_pairs: int, transform: str) -> tuple[int, ...] | None:
    """Per-pair channel counts from one number or one per pair; ``None`` allowed unless ``transform == "linear"``."""
    if value is None:
        if transform == "linear":
            raise ValueError(
                f"{name} is required with the learnable linear regressor: give the channels of each layer "
                "(one number for all, or one per layer)."
            )
        return None
    counts = (value,) * num_pairs if isinstance(value, int) else tuple(value)
    if len(counts) != num_pairs or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
        raise ValueError(
            f"{name} must be a positive integer or {num_pairs} positive integers (one per matched layer), "
            f"got {value!r}."
        )
    return counts


def _device_type(features: Sequence[Tensor]) -> str:
    """The device type of the first feature (``"cpu"`` for an empty or malformed input, left for the checks)."""
    first = features[0] if isinstance(features, Sequence) and len(features) else None
    return first.device.type if isinstance(first, Tensor) else "cpu"
