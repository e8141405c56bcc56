"""lightning-kd: knowledge distillation for image classifiers with PyTorch Lightning.

Built around *Logit Standardization in Knowledge Distillation* (Sun et al., CVPR 2024, arXiv:2403.01427).

The two modules are imported on first use, so that ``lightning-kd --help`` (and any tool that only needs a
submodule) does not pay for importing torch and Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_kd import _moved

_moved.install()  # the old paths of the modules now in lightning_kd.apps (lightning_kd.demo, ...) keep working

if TYPE_CHECKING:
    from lightning_kd.module import ClassificationModule, DistillationModule

__all__ = ["ClassificationModule", "DistillationModule"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lightning_kd import module

        return getattr(module, name)
    raise AttributeError(f"module 'lightning_kd' has no attribute {name!r}")
