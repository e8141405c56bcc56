"""Curriculum temperature knowledge distillation, optionally with logit standardization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._checks import check_epoch, check_finite, check_positive_int
from lightning_kd.losses.base import DistillationLoss, check_weight
from lightning_kd.losses.functional import cosine_decay, curriculum_temperature, kd_divergence, standardize_logits


class CTKD(DistillationLoss):
    r"""Curriculum Temperature KD (Li et al., AAAI 2023) with optional logit standardization (Sun et al., 2024).

    One learnable global temperature, adversarial to the student:

    .. math::
        \tau = t_{start} + t_{end}\,\sigma\big(\mathrm{GRL}_{\lambda_e}(\theta)\big),\qquad
        \mathcal{L} = w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\tau^2\,
        \mathrm{KL}\big(\mathrm{softmax}(f(t)/\tau)\,\|\,\mathrm{softmax}(f(s)/\tau)\big)

    :math:`\theta` (:attr:`theta`, shape ``(1,)``, initialised to 1.0, so :math:`\tau_0 \approx 15.6` with the
    defaults) is this loss's only parameter; :class:`~lightning_kd.DistillationModule` optimizes it with the
    student (same optimizer, learning rate and weight decay, as the reference) and saves it in checkpoints
    (state-dict key ``loss.theta``). The gradient-reversal layer GRL is the identity forward and multiplies
    :math:`\theta`'s gradient by :math:`\lambda_e` backward, with the cosine schedule
    (:func:`~lightning_kd.losses.functional.cosine_decay`) over the 1-indexed epoch :math:`e`:

    .. math::
        \lambda_e = \tfrac12\big(\cos(\pi \min(e, L) / L) + 1\big)(\lambda_{max} - \lambda_{min}) + \lambda_{min}

    so :math:`\lambda_1 = -0.0245` and :math:`\lambda_e = -1` from epoch :math:`L = 10` on: the temperature ascends
    the KD loss that the student descends. :math:`\tau` reaches :math:`\theta` through both softmaxes and the
    :math:`\tau^2` factor. :math:`f` is the identity or, with ``standardize=True``, the per-sample z-score of both
    logits (the KL term only; cross-entropy uses the raw student logits).

    The current temperature is not a loss term (every returned term is summed into the training loss); read it
    with :meth:`current_temperature`.

    Reference notes (``CTKD/`` in the LS repository):

    * Inverted flag (fixed): the reference's ``--logit_stand`` selects the *plain* KL and omitting it selects the
      z-scored one (its issue #15). Here ``standardize`` means what it says. The shipped CTKD + Ours script omits
      the flag, so the paper's CTKD + Ours runs used the z-scored KL: reproduce them with ``standardize=True``.
    * ``t_start`` / ``t_end``: the defaults 1 / 20 are the reference scripts' values (temperature in (1, 21)). The
      CTKD + Ours logs show first-epoch temperatures of 22.3-30.4 that settle at 2.00-2.03, which that range
      cannot produce; the logged runs must have used about ``t_start=2`` and ``t_end >= 28.4``, values found in
      no script. The defaults are kept; pass those to follow the logs.
    * CTKD + Ours weights are ``ce_weight=0.1, kd_weight=9``; original CTKD uses ``kd_weight=0.9`` (the default).

    Args:
        t_start: lowest temperature, >= 0.
        t_end: temperature range, > 0: :math:`\tau \in (t_{start}, t_{start} + t_{end})`.
        lambda_max: gradient-reversal factor at epoch 0 (start of the cosine schedule).
        lambda_min: gradient-reversal factor from epoch ``decay_epochs`` on.
        decay_epochs: :math:`L`, the length of the schedule in epochs (integer >= 1).
        ce_weight: weight of the cross-entropy term, >= 0.
        kd_weight: weight of the distillation term, >= 0.
        standardize: z-score both logits per sample before the KL (logit standardization, arXiv:2403.01427).

    Raises:
        ValueError: for a negative ``t_start``, a non-positive ``t_end``, a non-finite lambda, ``decay_epochs``
            below 1, a negative weight, or an epoch below 1.

    Example::

        >>> import torch
        >>> loss = CTKD(ce_weight=0.1, kd_weight=9.0, standardize=True)
        >>> terms = loss(torch.randn(8, 100), torch.randn(8, 100), torch.randint(0, 100, (8,)), epoch=3)
        >>> sorted(terms), [name for name, _ in loss.named_parameters()]
        (['ce', 'kd'], ['theta'])
    """

    #: the gradient-reversal lambda follows a per-epoch cosine schedule
    epoch_dependent = True

    def __init__(
        self,
        t_start: float = 1.0,
        t_end: float = 20.0,
        lambda_max: float = 0.0,
        lambda_min: float = -1.0,
        decay_epochs: int = 10,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if not t_start >= 0:
            raise ValueError(f"t_start must be >= 0, got {t_start!r}: it is the lowest temperature CTKD can reach.")
        if not t_end > 0:
            raise ValueError(f"t_end must be > 0, got {t_end!r}: the temperature lies in (t_start, t_start + t_end).")
        check_finite("lambda_max", lambda_max)
        check_finite("lambda_min", lambda_min)
        check_positive_int("decay_epochs", decay_epochs, "epochs of the cosine lambda schedule")
        check_weight("ce_weight", ce_weight)
        check_weight("kd_weight", kd_weight)
        self.t_start = float(t_start)
        self.t_end = float(t_end)
        self.lambda_max = float(lambda_max)
        self.lambda_min = float(lambda_min)
        self.decay_epochs = int(decay_epochs)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.standardize = bool(standardize)
        #: The global temperature logit: tau = t_start + t_end * sigmoid(theta). Shape (1,), as the reference.
        self.theta = nn.Parameter(torch.ones(1))

    def gradient_lambda(self, epoch: int) -> float:
        """The gradient-reversal factor :math:`\\lambda_e` at ``epoch`` (counted from 1)."""
        check_epoch(epoch)
        return cosine_decay(epoch, self.lambda_max, self.lambda_min, self.decay_epochs)

    def current_temperature(self) -> Tensor:
        """The temperature :math:`\\tau` the next step will use, as a detached scalar tensor (on ``theta``'s device).

        For monitoring; ``float(...)`` of it synchronizes with an accelerator, so read it at epoch ends.
        """
        with torch.no_grad():
            return (self.t_start + self.t_end * torch.sigmoid(self.theta.float())).squeeze(0)

    def monitored_temperature(self) -> Tensor:
        """The current learned temperature (detached)."""
        return self.current_temperature()

    def monitored_values(self) -> dict[str, Tensor]:
        """The learned temperature, logged by the module as ``train/temperature`` at each training epoch's end."""
        return {"temperature": self.current_temperature()}

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, epoch: int = 1
    ) -> dict[str, Tensor]:
        self._check_inputs(student_logits, teacher_logits, targets)
        lambda_ = self.gradient_lambda(epoch)
        # fp32 whatever the input dtype (also theta's, should the module have been cast to half precision)
        s, t = student_logits.float(), teacher_logits.float()
        ce = F.cross_entropy(s, targets)
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        temperature = curriculum_temperature(self.theta.float(), lambda_, self.t_start, self.t_end).squeeze(0)  # ()
        kd = kd_divergence(s, t, temperature)
        return {"ce": self.ce_weight * ce, "kd": self.kd_weight * kd}
