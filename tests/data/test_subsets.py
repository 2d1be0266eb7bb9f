"""Ratio subsets and holdout splits: stratified per class, seeded, nested across ratios."""

from __future__ import annotations

from collections import Counter

import pytest

from lfi.data.subsets import holdout_split, ratio_subset

LABELS = [y for y in range(20) for _ in range(100)][::-1] + [20] * 7  # 20 classes x 100, one class of 7


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 1.0])
def test_ratio_subset_is_stratified(ratio: float) -> None:
    idx = ratio_subset(LABELS, ratio, seed=0)
    counts = Counter(LABELS[i] for i in idx)
    assert all(counts[y] == max(1, round(ratio * 100)) for y in range(20))
    assert counts[20] == max(1, round(ratio * 7))
    assert idx == sorted(set(idx))


def test_ratio_subset_seeded_and_nested() -> None:
    assert ratio_subset(LABELS, 0.1, seed=1) == ratio_subset(LABELS, 0.1, seed=1)
    assert ratio_subset(LABELS, 0.1, seed=1) != ratio_subset(LABELS, 0.1, seed=2)
    one, ten, fifty = (set(ratio_subset(LABELS, r, seed=5)) for r in (0.01, 0.1, 0.5))
    assert one < ten < fifty
    assert len(ratio_subset(LABELS, 1.0)) == len(LABELS)


def test_ratio_subset_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError, match="ratio"):
        ratio_subset(LABELS, 0.0)
    with pytest.raises(ValueError, match="ratio"):
        ratio_subset(LABELS, 10)


def test_holdout_split_partitions() -> None:
    train, held = holdout_split(LABELS, 0.2, seed=0)
    assert sorted(train + held) == list(range(len(LABELS)))
    assert Counter(LABELS[i] for i in held)[3] == 20
    train, held = holdout_split([0, 1, 1], 0.5)  # a class of one sample stays in train
    assert 0 in train and len(held) == 1
