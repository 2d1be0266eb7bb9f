"""The test behind the study's verdicts: Welch's t (checked against scipy's ttest_ind and a hand-worked case)
and Holm's step-down correction (exact small cases)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from lfi.show.stats import holm, verdict, welch


def test_welch_hand_worked_case() -> None:
    # means 11 and 2, each variance 1 over 3 seeds: se = sqrt(2/3), t = 9 / se, df = 4 exactly
    w = welch([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    se = math.sqrt(2 / 3)
    assert w.diff == pytest.approx(9.0) and w.t == pytest.approx(9 / se) and w.df == pytest.approx(4.0)
    assert w.p == pytest.approx(2 * stats.t.sf(9 / se, 4))
    assert (w.low, w.high) == pytest.approx((9 - 2.776445 * se, 9 + 2.776445 * se), abs=1e-5)


@pytest.mark.parametrize(
    ("a", "b"),
    [([8.1, 8.5, 8.2], [10.2, 9.7, 10.6]), ([1.0, 2.0, 4.0, 8.0], [3.0, 3.5]), ([5.0, 5.1], [4.0, 7.0, 1.0])],
)
def test_welch_matches_scipy(a: list[float], b: list[float]) -> None:
    ref = stats.ttest_ind(a, b, equal_var=False)
    w = welch(a, b)
    assert w.t == pytest.approx(ref.statistic) and w.p == pytest.approx(ref.pvalue)


def test_welch_degenerate_and_too_few() -> None:
    assert welch([1.0, 1.0], [1.0, 1.0]).p == 1.0
    assert welch([2.0, 2.0], [1.0, 1.0]).p == 0.0
    with pytest.raises(ValueError, match=">= 2 seeds"):
        welch([1.0], [1.0, 2.0])


def test_holm_exact_small_cases() -> None:
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02]  # one comparison: nothing to correct
    assert holm([]) == []


def test_verdict_states_a_difference_only_under_holm() -> None:
    w = welch([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert verdict(w, 0.01).startswith("+9.00 (Δ +9.00 [") and verdict(w, 0.01).endswith("Holm 0.01)")
    assert verdict(w, 0.2).startswith("no difference shown (Δ +9.00")
    assert verdict(w, 0.2, digits=3).startswith("no difference shown (Δ +9.000 [")
