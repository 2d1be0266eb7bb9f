"""Seeded, per-class (stratified) subsets of a dataset, by index.

Used for the paper's data-ratio experiments (Table 2: 1/10/50/100 % of TinyImageNet train) and for the
train/val holdout of datasets that have no official validation split (DomainBed layout).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch


def _per_class_order(labels: Sequence[int], seed: int) -> dict[int, list[int]]:
    """{label: indices of that class in a seeded random order}; the order of a class depends only on the
    seed and the class's own indices, so adding or removing other classes leaves it unchanged."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    out = {}
    for y, idx in sorted(by_class.items()):
        g = torch.Generator().manual_seed(seed * 1_000_003 + y)
        out[y] = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
    return out


def ratio_subset(labels: Sequence[int], ratio: float, seed: int = 0) -> list[int]:
    """Indices of a stratified random subset holding `ratio` of every class (sorted ascending).

    Each class keeps ``max(1, round(ratio * n_class))`` samples, so no class vanishes at 1 %. For one seed the
    subsets are nested: ratio_subset(l, 0.01) is inside ratio_subset(l, 0.1), inside ratio_subset(l, 0.5).
    ratio 1.0 returns every index.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    keep = []
    for idx in _per_class_order(labels, seed).values():
        keep.extend(idx[: max(1, round(ratio * len(idx)))])
    return sorted(keep)


def holdout_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Stratified (train, held-out) indices; `fraction` of every class is held out (at least one sample
    where the class has two or more). Both lists sorted; together they cover every index exactly once."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    train, held = [], []
    for idx in _per_class_order(labels, seed).values():
        n_held = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        held.extend(idx[:n_held])
        train.extend(idx[n_held:])
    return sorted(train), sorted(held)
