"""The frozen teacher of a :class:`~lightning_kd.DistillationModule`: the one place teacher outputs come from.

:class:`Teacher` takes one network or several (an ensemble, whose logits are the mean of its members'), freezes
them, keeps them in eval mode, runs them under :func:`torch.no_grad`, owns the optional BatchNorm-folded copies and
knows whether trained weights are present. The module asks it for a batch's :class:`TeacherOutput` and for nothing
else about the teacher's computation, so a new source of teacher outputs (logits read from a cache,
:class:`~lightning_kd.teacher_cache.CachedTeacher`; intermediate features beside the logits) is a subclass that
overrides :meth:`Teacher.outputs` (and :meth:`Teacher.step_extras` when it reads more of the batch) and fills the
output's fields, without a change to the module.

The networks stay registered on the module (``module.teacher``: the network itself, or a
:class:`~lightning_kd.models.ensemble.LogitEnsemble` of several), so checkpoints keep their ``teacher.*`` keys and
device moves, DDP and FSDP wrapping act on them as on any submodule; the component reads ``module.teacher`` at each
use, so it sees a wrapped teacher too.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from lightning_kd._views import apply_views
from lightning_kd.features import feature_network
from lightning_kd.models.ensemble import LogitEnsemble, mean_logits
from lightning_kd.models.fold import fold_batchnorm, hooked_modules

__all__ = ["Teacher", "TeacherOutput"]

Logits = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class TeacherOutput:
    """What the teacher gives for one batch.

    Attributes:
        logits: the teacher's logits, ``(B, K)`` or a tuple of views; for an ensemble the mean of the members'.
        member_logits: each member's logits, in the order given (one entry for a single teacher).
        features: the intermediate features asked for with :meth:`Teacher.request_features`, in that order (from
            the same forward pass as the logits); empty when none were asked for.
    """

    logits: Logits
    member_logits: tuple[Logits, ...]
    features: tuple[Tensor, ...] = ()


class Teacher:
    """Frozen teacher networks of a module: freezing, the eval lock, ``no_grad`` forwards and folded copies.

    Args:
        owner: the module that registers the teacher network as the attribute ``attribute``.
        available: whether trained weights are loaded; when not, ``fit`` refuses to start and evaluation skips the
            teacher.
        fold_bn: run BatchNorm-folded copies of the members (:func:`~lightning_kd.models.fold.fold_batchnorm`).
        attribute: the owner's attribute holding the network (``"teacher"``).
        input_size: the side the teacher sees: each batch is resized to ``input_size x input_size`` (bilinear,
            ``align_corners=False``, on the batch's device) before the teacher's forward; ``None`` feeds it the
            student's inputs as they are.
    """

    def __init__(
        self,
        owner: nn.Module,
        *,
        available: bool,
        fold_bn: bool,
        attribute: str = "teacher",
        input_size: int | None = None,
    ) -> None:
        if input_size is not None and (
            not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1
        ):
            raise ValueError(f"teacher_input_size must be a positive integer (pixels) or None, got {input_size!r}.")
        self.input_size = input_size
        self._owner = owner
        self._attribute = attribute
        self.available = available
        self.fold_bn = bool(fold_bn)
        # plain attributes (tuples, so nn.Module never registers them): the copies never enter state_dict
        self._folded: tuple[nn.Module, ...] | None = None
        self._folded_network: tuple[nn.Module] | None = None
        # each member's hooked modules when its copy was made: the copy carries (and fires) exactly their hooks
        self._folded_hooks: tuple[frozenset[str], ...] = ()
        self._eval_warning_filter: tuple[Any, ...] | None = None
        #: the teacher layers a feature loss reads (None: logits only)
        self.feature_layers: tuple[int | str, ...] | None = None
        # (member, its feature network) and the folded copy of that network; tuples keep them out of nn.Module
        self._feature_net: tuple[nn.Module, nn.Module] | None = None
        self._folded_feature_net: tuple[nn.Module] | None = None
        self.freeze()

    # ------------------------------------------------------------------ the networks

    @property
    def network(self) -> nn.Module:
        """The registered teacher network (one network, or a :class:`LogitEnsemble`)."""
        return getattr(self._owner, self._attribute)

    @property
    def members(self) -> tuple[nn.Module, ...]:
        """The teacher networks, one for a single teacher (a wrapped ensemble counts as one)."""
        network = self.network
        return tuple(network.members) if isinstance(network, LogitEnsemble) else (network,)

    def freeze(self) -> None:
        """No gradients for any teacher parameter, and eval mode (BatchNorm statistics and dropout fixed)."""
        self.network.requires_grad_(False)
        self.network.eval()

    def lock_eval(self) -> None:
        """Put the teacher back in eval mode (after ``.train()`` on the owner, and at every epoch start)."""
        self.network.eval()

    def parameters(self) -> Any:
        """The teacher's parameters (every member's)."""
        return self.network.parameters()

    # ------------------------------------------------------------------ fit hooks (a cache overrides them)

    def setup_fit(self, module: Any, datamodule: Any) -> None:
        """Called at ``setup("fit")``, after the module's own checks: nothing to prepare for live networks."""
        del module, datamodule

    def place(self, device: torch.device) -> None:
        """Called at train start with the training device: the networks move with the module."""
        del device

    def checkpoint_record(self) -> dict[str, Any] | None:
        """What a checkpoint records about this source of outputs (``None``: nothing beyond the teacher's state)."""
        return None

    def check_checkpoint_record(self, recorded: dict[str, Any] | None) -> None:
        """Refuse to resume from a checkpoint whose :meth:`checkpoint_record` does not fit this source."""
        del recorded

    # ------------------------------------------------------------------ outputs

    def step_extras(self, batch_extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """What a training step needs from the batch beyond its inputs: nothing, the networks see the inputs.

        A source that reads outputs by sample (a logit cache, :class:`~lightning_kd.teacher_cache.CachedTeacher`)
        returns the batch's keys; the step runner hands them to :meth:`outputs` as ``extras`` (under a CUDA graph,
        through static buffers like the inputs).
        """
        del batch_extras
        return ()

    def outputs(
        self, inputs: Tensor | tuple[Tensor, ...] | list[Tensor], extras: tuple[Tensor, ...] = ()
    ) -> TeacherOutput:
        """The teacher's outputs for a batch's inputs (a tensor, or a tuple of views), computed under ``no_grad``.

        Args:
            inputs: the batch's inputs, as the student sees them.
            extras: what :meth:`step_extras` took from a training batch (empty in evaluation); unused here.
        """
        del extras  # computed from the inputs
        inputs = self.teacher_inputs(inputs)
        # not inference_mode: the loss saves teacher probabilities for backward
        with torch.no_grad():
            if self.feature_layers is not None:
                logits, features = self.feature_forward()(inputs)
                return TeacherOutput(logits, (logits,), tuple(features))
            member_logits = tuple(apply_views(net, inputs) for net in self.forward_members())
            return TeacherOutput(mean_logits(member_logits), member_logits)

    def teacher_inputs(self, inputs: Tensor | tuple[Tensor, ...] | list[Tensor]) -> Any:
        """The inputs as the teacher sees them: resized to :attr:`input_size` when it is set (each view)."""
        size = self.input_size
        if size is None:
            return inputs

        def resize(x: Tensor) -> Tensor:
            if x.shape[-2:] == (size, size):
                return x
            return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

        return type(inputs)(resize(x) for x in inputs) if isinstance(inputs, (tuple, list)) else resize(inputs)

    def request_features(self, layers: Sequence[int | str]) -> None:
        """From now on :meth:`outputs` also returns the features of ``layers`` (indices or submodule names; see
        :mod:`lightning_kd.features`), computed in the same forward pass as the logits, folded with ``fold_bn``.

        Raises:
            ValueError: an ensemble teacher (whose members' features have no single meaning), or bad layers.
        """
        if isinstance(self.network, LogitEnsemble):
            raise ValueError(
                f"A feature loss reads one teacher's intermediate features, but this teacher is an ensemble of "
                f"{len(self.network.members)} networks: distil features from a single teacher."
            )
        self.feature_layers = tuple(layers)
        self._feature_net = (self.network, feature_network(self.network, self.feature_layers, "teacher"))
        self._folded_feature_net = None

    def feature_forward(self) -> nn.Module:
        """The network computing ``(logits, features)``: the folded copy with ``fold_bn``, else the teacher's graph."""
        if self._feature_net is None or self._feature_net[0] is not self.network:  # e.g. wrapped since the request
            self.request_features(self.feature_layers)
        if not self.fold_bn or self._folded == self.members:
            return self._feature_net[1]
        if self._folded_feature_net is None:
            self._fold()
        return self._folded_feature_net[0]

    def forward_members(self) -> tuple[nn.Module, ...]:
        """The networks that compute the members' logits: the folded copies with ``fold_bn``, else the members.

        Outside a Trainer the folded copies are made on first use.
        """
        if not self.fold_bn:
            return self.members
        if self._folded is None:
            self._fold()
        return self._folded

    def forward_network(self) -> nn.Module:
        """One network computing the teacher's logits: the teacher, its folded copy, or an ensemble of copies.

        Hooks on the teacher's modules fire on the folded copies too: a copy keeps each module that has a hook when
        it is made, sharing its hooks (see :func:`~lightning_kd.models.fold.fold_batchnorm`).
        """
        nets = self.forward_members()
        if nets == self.members:
            return self.network
        if len(nets) == 1:
            return nets[0]
        if self._folded_network is None:
            self._folded_network = (LogitEnsemble(nets),)
        return self._folded_network[0]

    # ------------------------------------------------------------------ folded copies

    def refresh(self, strategy: Strategy) -> bool:
        """(Re)build the folded copies from the current weights, on the teacher's device, when ``fold_bn`` is on.

        Returns:
            Whether new copies were made (a captured training step then reads stale weights and must re-capture).
        """
        if not self.fold_bn or not self.available:
            return False
        if isinstance(strategy, FSDPStrategy) or any(p.numel() == 0 for p in self.parameters()):
            # a speed option only (the logits are the same): under sharding it does nothing, and says so
            self._folded = self.members
            rank_zero_warn(
                f"fold_teacher_bn=True has no effect under {type(strategy).__name__}: the teacher's weights are "
                "sharded across processes and cannot be folded into one copy, so the teacher runs as it is. Set "
                "fold_teacher_bn to false (--model.init_args.fold_teacher_bn false) to silence this."
            )
            return False
        self._fold()
        return True

    def refresh_if_hooks_changed(self, strategy: Strategy) -> bool:
        """A hook put on another teacher module since the copies were made (or all taken off one): copy again.

        Hooks added to or removed from a module that was hooked already need nothing: the copy shares its hooks.

        Returns:
            Whether new copies were made.
        """
        folded = self._folded
        if folded is None or folded == self.members:
            return False
        if tuple(hooked_modules(m) for m in self.members) == self._folded_hooks:
            return False
        return self.refresh(strategy)

    def _fold(self) -> None:
        members = self.members
        self._folded_hooks = tuple(hooked_modules(m) for m in members)
        self._folded = tuple(fold_batchnorm(m) for m in members)
        self._folded_network = None
        if self.feature_layers is not None:
            if self._feature_net is None or self._feature_net[0] is not self.network:
                self._feature_net = (self.network, feature_network(self.network, self.feature_layers, "teacher"))
            self._folded_feature_net = (fold_batchnorm(self._feature_net[1]),)

    # ------------------------------------------------------------------ fit-time checks

    def require_weights(self, weights: Any) -> None:
        """Raise unless trained weights are present (distillation from random weights is never intended).

        Raises:
            FileNotFoundError: naming ``weights`` and the flag that gives them.
        """
        if not self.available:
            raise FileNotFoundError(
                f"teacher_weights {weights!r} does not exist, and distillation needs the teacher's trained weights: "
                "pass the path of the teacher checkpoint (--model.init_args.teacher_weights PATH, or "
                "teacher_weights=... in Python)."
            )

    def silence_eval_mode_warning(self, owner: nn.Module) -> None:
        """Silence Lightning's "modules in eval mode at the start of training" warning for exactly the teacher.

        Lightning >= 2.5.5 warns about modules in eval mode at fit start; the frozen teacher is in eval mode by
        design. Only that count is silenced, so a student module left in eval mode still warns.
        """
        n_teacher = sum(1 for _ in self.network.modules())
        n_eval = sum(1 for m in owner.modules() if not m.training)
        if n_eval == n_teacher:
            pattern = re.escape(f"Found {n_teacher} module(s) in eval mode at the start of training.")
            warnings.filterwarnings("ignore", message=pattern, category=PossibleUserWarning)
            self._eval_warning_filter = warnings.filters[0]

    def restore_warnings(self) -> None:
        """Drop the filter of :meth:`silence_eval_mode_warning` (the warning is only raised at fit start)."""
        if self._eval_warning_filter is not None and self._eval_warning_filter in warnings.filters:
            warnings.filters.remove(self._eval_warning_filter)
        self._eval_warning_filter = None
