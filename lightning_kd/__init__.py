"""lightning-kd: knowledge distillation for image classifiers with PyTorch Lightning.

Built around *Logit Standardization in Knowledge Distillation* (Sun et al., CVPR 2024, arXiv:2403.01427).
"""

from lightning_kd.module import ClassificationModule, DistillationModule

__all__ = ["ClassificationModule", "DistillationModule"]
__version__ = "0.1.0"
