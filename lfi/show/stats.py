"""The test behind every verdict of a study: Welch's t over seeds, Holm's correction over a family of claims.

    w = welch(a, b)            # a, b: one score per seed of two rows (unequal variances allowed)
    w.diff, w.low, w.high      # mean(a) - mean(b) and its two-sided 95% interval (Welch-Satterthwaite df)
    w.p                        # two-sided p of H0: equal means
    holm([w.p for w in family])  # step-down adjusted p, one per comparison, same order

With three seeds a row has 2 degrees of freedom: the test has little power (a real gap of one seed std is
missed most of the time), so "no difference shown" is not "equal". Seeds share the test images, so the
seed-to-seed spread is the only noise measured; the images' sampling noise is not in it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t test of mean(a) - mean(b): the difference, its (1 - alpha) interval, t, the
    Welch-Satterthwaite degrees of freedom and the two-sided p."""

    diff: float
    low: float
    high: float
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Welch:
    """Welch's t test of two samples (each >= 2 values). Where both samples have no spread the test is
    degenerate: p = 1 for equal means, 0 otherwise (the interval is the point)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch: each row needs >= 2 seeds, got {len(a)} and {len(b)}")
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Welch(diff, diff, diff, math.copysign(math.inf, diff) if diff else 0.0, math.nan,
                     1.0 if diff == 0 else 0.0)  # fmt: skip
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return Welch(diff, diff - half, diff + half, t, df, float(2 * stats.t.sf(abs(t), df)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i + 1), made
    monotone and capped at 1. Rejecting where adjusted p < alpha bounds the family-wise error by alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(w: Welch, p_holm: float, alpha: float = ALPHA, digits: int = 2) -> str:
    """One cell: the difference, its interval, p and Holm's p, and what they allow one to say."""
    f = f"+.{digits}f"
    said = format(w.diff, f) if p_holm < alpha else "no difference shown"
    return f"{said} (Δ {w.diff:{f}} [{w.low:{f}}, {w.high:{f}}], p {w.p:.2g}, Holm {p_holm:.2g})"
