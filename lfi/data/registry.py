"""`build_dataset(name, root, split, **kw)`: one entry point for every dataset, by name (for configs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset, Subset

from lfi.data.coco import CocoDetection
from lfi.data.domainbed import VLCS
from lfi.data.pacs import PACS
from lfi.data.subsets import ratio_subset
from lfi.data.tinyimagenet import TinyImageNet

# name -> builder(root, split, **kw); each dataset documents its own splits and keyword arguments.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "tinyimagenet": lambda root, split, **kw: TinyImageNet(root, split, **kw),
    "pacs": lambda root, split, **kw: PACS(root, split=split, **kw),
    "vlcs": lambda root, split, **kw: VLCS(root, split=split, **kw),
    "coco": lambda root, split, **kw: CocoDetection(root, split, **kw),
}


def build_dataset(
    name: str, root: Path | str, split: str, ratio: float = 1.0, seed: int = 0, **kw
) -> Dataset:
    """Dataset `name` ('tinyimagenet', 'pacs', 'vlcs', 'coco') of `split` read from `root`.

    kw go to the dataset (e.g. domains=['photo'] for PACS/VLCS, return_masks=True for COCO).
    ratio < 1 keeps a seeded, per-class stratified `ratio` of the samples (`ratio_subset`), as a
    torch Subset whose `.dataset` is the full dataset; classification datasets only.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    dataset = DATASETS[name](root, split, **kw)
    if ratio == 1.0:
        return dataset
    if not hasattr(dataset, "labels"):
        raise ValueError(f"dataset {name!r} has no per-sample labels, which ratio subsets need")
    return Subset(dataset, ratio_subset(dataset.labels, ratio, seed))
