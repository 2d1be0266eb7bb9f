"""`build_dataset`: every dataset of `lfi.data` by name, the one dispatcher used by extraction and training.

Each dataset module is imported inside its branch, so naming one dataset never loads another's dependencies
(pycocotools for COCO, for instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

#: Names `build_dataset` accepts.
DATASETS = ("tinyimagenet", "pacs", "vlcs", "coco", "voc")
#: Datasets with domains (PACS, VLCS) and with instance masks (COCO).
DOMAIN_DATASETS = ("pacs", "vlcs")
MASK_DATASETS = ("coco",)


def build_dataset(
    name: str,
    root: Path | str,
    split: str,
    *,
    domains: Sequence[str] | None = None,
    masks: bool = False,
    **options: Any,
) -> Dataset:
    """Dataset `name` (one of `DATASETS`) of `split`, read from `root` (a zip, its folder, or the extracted
    dataset; each dataset's class documents what it accepts).

    domains: PACS / VLCS only, None = all; the splits keep each dataset's own meaning (PACS: official kfold
    lists 'train', 'crossval' = 'val', 'test' = the whole domain; VLCS: 'all', or a seeded holdout 'train' /
    'val'). masks: COCO only, instance masks in each sample. options: further keywords of the dataset's class
    (e.g. holdout and seed for VLCS, year for VOC, crowd for COCO).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if domains is not None and name not in DOMAIN_DATASETS:
        raise ValueError(f"dataset {name!r} has no domains (only {', '.join(DOMAIN_DATASETS)} do)")
    if masks and name not in MASK_DATASETS:
        raise ValueError(f"dataset {name!r} has no instance masks (only {', '.join(MASK_DATASETS)} has)")
    if name == "tinyimagenet":
        from lfi.data.tinyimagenet import TinyImageNet

        return TinyImageNet(root, split, **options)
    if name == "pacs":
        from lfi.data.pacs import PACS

        return PACS(root, domains, split, **options)
    if name == "vlcs":
        from lfi.data.domainbed import VLCS

        return VLCS(root, domains, split=split, **options)
    if name == "coco":
        from lfi.data.coco import CocoDetection

        return CocoDetection(root, split, return_masks=masks, **options)
    from lfi.data.voc import VOCDetection

    return VOCDetection(root, split, **options)
