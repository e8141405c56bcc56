"""Sharded training with a frozen teacher: an FSDP auto-wrap policy that never mixes frozen and trainable weights.

FSDP (v1, ``torch.distributed.fsdp.FullyShardedDataParallel``, which Lightning's ``FSDPStrategy`` uses) flattens
the parameters of each wrapped unit into one ``FlatParameter``. A flat parameter has a single ``requires_grad``:
with ``use_orig_params=False`` a unit that holds both the frozen teacher's and the student's parameters is an
error (``ValueError: Must flatten tensors with uniform requires_grad``, pytorch/pytorch#104690); with
``use_orig_params=True`` (Lightning's default) it is accepted, but gradient memory is allocated for the whole
flat parameter, the frozen part included.

:class:`FrozenApartPolicy` makes every maximal frozen subtree (the teacher) its own unit, and splits trainable
subtrees (the student) into units by size, so no unit ever mixes the two.
"""

from __future__ import annotations

from torch import nn

__all__ = ["FrozenApartPolicy", "requires_grad_kinds"]


def requires_grad_kinds(module: nn.Module) -> set[bool]:
    """The distinct ``requires_grad`` flags among ``module``'s parameters: ``{True}``, ``{False}``, both, or none."""
    return {p.requires_grad for p in module.parameters()}


class FrozenApartPolicy:
    """FSDP auto-wrap policy: each maximal frozen subtree is one unit; trainable subtrees are split by size.

    FSDP visits the module tree top-down, asking first whether to descend into a module (``recurse=True``) and,
    after its children, whether to wrap what is left of it (``recurse=False``). The decisions:

    * a frozen subtree (all parameters ``requires_grad=False``) whose parent is not frozen, such as the teacher:
      wrapped whole, as one unit whose ``FlatParameter`` has ``requires_grad=False`` and is never gathered for a
      backward pass; modules inside it are not wrapped on their own by this policy (it is sharded as a whole);
    * a trainable subtree (the student): descended into, and wrapped once it holds at least ``min_num_params``
      parameters that no child unit took (FSDP's size rule, so large students are sharded block by block);
    * a module with both kinds (the distillation module itself, a partly frozen student): descended into and
      never wrapped as one unit. The root is always the outermost unit and keeps what no child unit took, e.g. a
      loss's learnable temperature, which is trainable like the student.

    A single layer that directly holds both kinds (a frozen weight with a trainable bias) cannot be split by any
    policy; such a model needs ``use_orig_params=True``. Other policies that FSDP combines with this one (with
    a mixed-precision config, FSDP also wraps every BatchNorm on its own) only make smaller units, which stay
    uniform.

    Args:
        min_num_params: smallest number of trainable parameters that make a unit of their own. Smaller trainable
            pieces stay in the enclosing unit (the root, for a small student), which is trainable too.

    Example::

        from lightning.pytorch.strategies import FSDPStrategy
        strategy = FSDPStrategy(auto_wrap_policy=FrozenApartPolicy(min_num_params=1_000_000))
        Trainer(accelerator="cuda", devices=8, strategy=strategy).fit(module, data)
    """

    def __init__(self, min_num_params: int = 1_000_000) -> None:
        if not isinstance(min_num_params, int) or isinstance(min_num_params, bool) or min_num_params < 1:
            raise ValueError(f"min_num_params must be a positive integer, got {min_num_params!r}.")
        self.min_num_params = min_num_params
        # ids of the frozen children of non-frozen modules seen so far: the units to make
        self._frozen_roots: set[int] = set()

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        """FSDP's policy protocol: with ``recurse=True``, whether to descend; else whether to wrap ``module``."""
        kinds = requires_grad_kinds(module)
        if recurse:
            # FSDP asks about a parent before its children, and only a module it descended into can be wrapped:
            # descend everywhere, remembering the frozen children of non-frozen modules (the units to make)
            if True in kinds:
                self._frozen_roots.update(
                    id(child) for child in module.children() if requires_grad_kinds(child) == {False}
                )
            return True
        if kinds == {False}:
            return id(module) in self._frozen_roots
        if kinds == {True}:
            return nonwrapped_numel >= self.min_num_params
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_num_params={self.min_num_params})"
