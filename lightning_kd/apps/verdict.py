r"""The verdict rule of the fidelity tables: does one set of runs beat another by more than the seed spread?

Rule: :math:`\Delta = \bar a - \bar b` (difference of mean best top-1, percentage points) against the standard error
of that difference :math:`SE = \sqrt{s_a^2/n_a + s_b^2/n_b}` (sample stds). The gain is called resolved when
:math:`\Delta > 2\,SE` (about a 95% one-sided Welch bound for many seeds, looser for 3), a loss when
:math:`\Delta < -2\,SE`, and otherwise not resolved by the seed spread. The pooled std is reported beside it. With
fewer than two runs on a side there is no spread, and no verdict. ``benchmarks/fidelity.py`` (from its records) and
``lightning-kd summarize`` (from run folders) both use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: a difference of means is called resolved when it exceeds this many standard errors of the difference
SE_THRESHOLD = 2.0


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1); ``None`` for fewer than two values."""
    return statistics.stdev(values) if len(values) >= 2 else None


def verdict(name_a: str, best_a: Sequence[float], name_b: str, best_b: Sequence[float]) -> str:
    """One verdict clause for ``name_a`` (best top-1 of its runs, percent) against ``name_b`` (see the module rule)."""
    if not best_a or not best_b:
        missing = [name for name, best in ((name_a, best_a), (name_b, best_b)) if not best]
        return f"{name_a} vs {name_b}: not measured (no complete run of {', '.join(missing)})"
    delta = statistics.fmean(best_a) - statistics.fmean(best_b)
    std_a, std_b = sample_std(best_a), sample_std(best_b)
    n_a, n_b = len(best_a), len(best_b)
    if std_a is None or std_b is None:
        return (
            f"{name_a} vs {name_b}: {delta:+.2f} pp from {n_a} and {n_b} run(s); no seed spread with a single run, "
            "no verdict"
        )
    se = math.sqrt(std_a**2 / n_a + std_b**2 / n_b)
    pooled = math.sqrt(((n_a - 1) * std_a**2 + (n_b - 1) * std_b**2) / (n_a + n_b - 2))
    ratio = delta / se if se > 0 else math.copysign(math.inf, delta) if delta else 0.0
    spread = f"{delta:+.2f} pp = {ratio:+.1f} SE (SE {se:.2f}, pooled std {pooled:.2f}, n {n_a}/{n_b})"
    if ratio > SE_THRESHOLD:
        return f"{name_a} beats {name_b} by {spread}"
    if ratio < -SE_THRESHOLD:
        return f"{name_a} does not beat {name_b}: it is worse by {spread}"
    return f"{name_a} does not clearly beat {name_b}: {spread}, within {SE_THRESHOLD:g} SE"
