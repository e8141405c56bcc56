"""Multi-level logit distillation on weak and strong views, optionally with logit standardization."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.base import DistillationLoss, Logits, check_temperature, check_weight
from lightning_kd.losses.functional import (
    batch_correlation,
    class_correlation,
    confidence_masks,
    kd_divergence,
    kd_divergence_per_sample,
    standardize_logits,
)


def _two_views(logits: Logits, role: str) -> tuple[Tensor, Tensor]:
    """``(weak, strong)`` from a tuple/list of two views; a clear error for anything else."""
    if isinstance(logits, Tensor):
        raise ValueError(
            f"MLKD needs two views of every training image, (weak, strong), but the {role} logits are a single tensor "
            f"of shape {tuple(logits.shape)}. Turn the views on in the data module with `two_views: true` (Python: "
            "CIFAR100DataModule(..., two_views=True)) so training batches are ((weak, strong), targets)."
        )
    if not isinstance(logits, Sequence) or len(logits) != 2:
        found = f"{len(logits)} views" if isinstance(logits, Sequence) else type(logits).__name__
        raise ValueError(
            f"MLKD needs exactly two views (weak, strong) of the {role} logits, got {found}. Use a data module with "
            "`two_views: true`, whose training batches are ((weak, strong), targets)."
        )
    return logits[0], logits[1]


class MLKD(DistillationLoss):
    r"""Multi-Level Logit Distillation (Jin et al., CVPR 2023) with optional logit standardization (Sun et al., 2024).

    Both networks see a weak and a strong augmentation of each image (data module option ``two_views: true``);
    ``student_logits`` and ``teacher_logits`` are ``(weak, strong)`` tuples. With the temperature set
    :math:`\mathcal{T} = \{T_0, 3, 5, 2, 6\}` (:math:`T_0` = ``temperature``), :math:`w` = ``kd_weight``,
    :math:`m^{s}` / :math:`m^{c}` the teacher's low-confidence sample / class masks
    (:func:`~lightning_kd.losses.functional.confidence_masks`, weak view, raw logits, temperature 1) and
    :math:`\bar m` the fraction of True entries of a mask, the terms are

    .. math::
        \mathrm{ce} &= w_{ce}\,[\mathrm{CE}(s_w, y) + \mathrm{CE}(s_s, y)] \\
        \mathrm{kd} &= w \sum_{T \in \mathcal{T}} \bar m^{s}\,\mathrm{KD}_T(f(s_w), f(t_w))
            + w \sum_{T \in \{T_0,3,5\}} \mathrm{KD}_T(f(s_s), f(t_s))
            + w \sum_{T \in \{2,6\}} \mathrm{KD}_T(f(s_w), f(t_w)) \\
        \mathrm{cc} &= w \sum_{T \in \mathcal{T}} \bar m^{c}\,\mathrm{CC}_T(s_w, t_w),\qquad
        \mathrm{bc} = w \sum_{T \in \mathcal{T}} \bar m^{s}\,\mathrm{BC}_T(s_w, t_w)

    with :math:`\mathrm{KD}_T` the batch-mean :math:`T^2`-scaled KL
    (:func:`~lightning_kd.losses.functional.kd_divergence`), CC and BC the class- and batch-correlation losses
    (:func:`~lightning_kd.losses.functional.class_correlation`,
    :func:`~lightning_kd.losses.functional.batch_correlation`) and :math:`f` the identity or, with
    ``standardize=True``, the per-sample z-score. As in the reference, logit
    standardization applies to the KL terms only: never to the cross-entropy, the CC and BC terms or the masks.
    The strong view's CC and BC, which the reference computes but never adds, are left out.

    Reference quirks (``mdistiller/distillers/MLKD.py``, inherited from upstream MLKD); each is reproduced by
    default and can be fixed with an argument, since fixing it changes the results:

    * ``scalar_masks=True`` (reproduced): the reference reduces each term to a scalar *before* multiplying by the
      boolean mask, so a mask only scales the term by its fraction of True entries (about 0.5); no sample or class
      is actually selected. ``False`` applies the masks per sample (KD rows, BC columns) and per class (CC
      columns), keeping each term's normalization.
    * ``weak_logits_in_strong_terms=True`` (reproduced): the strong-view KD terms at temperatures 2 and 6 use the
      *weak*-view logits (a copy-paste slip). ``False`` uses the strong-view logits at all five temperatures.

    Defaults are upstream MLKD's (``temperature=4, ce_weight=0.1, kd_weight=0.9``); "MLKD + Ours" uses
    ``temperature=2, kd_weight=9`` (6 for some pairs) with ``standardize=True``.

    Args:
        temperature: :math:`T_0 > 0`, the first temperature of the set (the base temperature when standardizing).
        ce_weight: weight of the cross-entropy terms, >= 0.
        kd_weight: weight :math:`w \ge 0` of every KL, CC and BC term.
        standardize: z-score both logits per sample before the KL terms (logit standardization, arXiv:2403.01427).
        scalar_masks: reproduce the reference's masks acting as scalar factors (see above).
        weak_logits_in_strong_terms: reproduce the reference's weak logits in two strong-view terms (see above).

    Raises:
        ValueError: for a non-positive temperature, a negative weight, or logits that are not two views (a single
            tensor means the data module's ``two_views`` option is off).

    Example::

        >>> import torch
        >>> loss = MLKD(temperature=2.0, kd_weight=9.0, standardize=True)
        >>> weak, strong = torch.randn(8, 100), torch.randn(8, 100)
        >>> terms = loss((weak, strong), (weak + 1, strong - 1), torch.randint(0, 100, (8,)))
        >>> sorted(terms)
        ['bc', 'cc', 'ce', 'kd']
    """

    num_views = 2
    #: The temperatures after ``temperature`` in the reference's set, in its order.
    EXTRA_TEMPERATURES: tuple[float, ...] = (3.0, 5.0, 2.0, 6.0)

    def __init__(
        self,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        standardize: bool = False,
        *,
        scalar_masks: bool = True,
        weak_logits_in_strong_terms: bool = True,
    ) -> None:
        super().__init__()
        check_temperature("temperature", temperature)
        check_weight("ce_weight", ce_weight)
        check_weight("kd_weight", kd_weight)
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.standardize = bool(standardize)
        self.scalar_masks = bool(scalar_masks)
        self.weak_logits_in_strong_terms = bool(weak_logits_in_strong_terms)

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperature set ``(temperature, 3, 5, 2, 6)``."""
        return (self.temperature, *self.EXTRA_TEMPERATURES)

    def forward(
        self, student_logits: Logits, teacher_logits: Logits, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        s_weak, s_strong = _two_views(student_logits, "student")
        t_weak, t_strong = _two_views(teacher_logits, "teacher")
        self._check_inputs(s_weak, t_weak, targets)
        self._check_inputs(s_strong, t_strong, targets)
        # fp32 whatever the input dtype: std over ~100 classes and exp/log are fragile in fp16/bf16
        s_weak, s_strong, t_weak, t_strong = (x.float() for x in (s_weak, s_strong, t_weak, t_strong))
        with torch.no_grad():
            sample_mask, class_mask = confidence_masks(t_weak)  # raw teacher logits, as the reference
        sample_w, class_w = sample_mask.float(), class_mask.float()

        ce = F.cross_entropy(s_weak, targets) + F.cross_entropy(s_strong, targets)
        z = standardize_logits if self.standardize else _identity
        zs_weak, zt_weak, zs_strong, zt_strong = z(s_weak), z(t_weak), z(s_strong), z(t_strong)

        temperatures = self.temperatures
        kd_weak, cc, bc = [], [], []
        for temperature in temperatures:
            if self.scalar_masks:
                kd_weak.append(kd_divergence(zs_weak, zt_weak, temperature) * sample_w.mean())
                cc.append(class_correlation(s_weak, t_weak, temperature) * class_w.mean())
                bc.append(batch_correlation(s_weak, t_weak, temperature) * sample_w.mean())
            else:
                kd_weak.append((kd_divergence_per_sample(zs_weak, zt_weak, temperature) * sample_w).mean())
                cc.append(class_correlation(s_weak, t_weak, temperature, class_weights=class_w))
                bc.append(batch_correlation(s_weak, t_weak, temperature, sample_weights=sample_w))
        kd_strong = []
        for index, temperature in enumerate(temperatures):
            # the reference's strong-view sum uses the weak logits at its 4th and 5th temperatures (2 and 6)
            weak_slip = self.weak_logits_in_strong_terms and index >= 3
            s, t = (zs_weak, zt_weak) if weak_slip else (zs_strong, zt_strong)
            kd_strong.append(kd_divergence(s, t, temperature))

        w = self.kd_weight
        return {
            "ce": self.ce_weight * ce,
            "kd": w * (torch.stack(kd_weak).sum() + torch.stack(kd_strong).sum()),
            "cc": w * torch.stack(cc).sum(),
            "bc": w * torch.stack(bc).sum(),
        }


def _identity(x: Tensor) -> Tensor:
    return x
