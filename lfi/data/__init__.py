"""Datasets, joint image/box/mask/interaction-map transforms, and the store-backed training wrapper.

Modules: `keys` (image store keys), `source` (zips or folders), `base` (sample format), `tinyimagenet`,
`pacs`, `domainbed` (VLCS and any DomainBed-layout set), `coco` (also any COCO-format json by path), `voc`,
`osie`, `imagefolder` (your own images, one folder per class), `build` (`build_dataset`, one entry point by
name; `imagefolder_sets` / `coco_sets`, a config's own data by path), `subsets` (ratio subsets), `transforms` (InteractionMap tv_tensor), `pipelines`
(standard v2 pipelines), `interaction` (`WithInteractionMaps`), `collate`.

The names below are imported on first use (PEP 562), so that `import lfi.data.keys` or
`lfi.data.build_dataset` do not load torchvision's transforms.
"""

from __future__ import annotations

import importlib
from typing import Any

# exported name -> module that defines it
_EXPORTS = {
    "ImageFolder": "lfi.data.imagefolder",
    "InteractionMap": "lfi.data.transforms",
    "WithInteractionMaps": "lfi.data.interaction",
    "build_dataset": "lfi.data.build",
    "classification_transforms": "lfi.data.pipelines",
    "collate_classification": "lfi.data.collate",
    "collate_detection": "lfi.data.collate",
    "detection_transforms": "lfi.data.pipelines",
    "image_key": "lfi.data.keys",
    "map_to_grid": "lfi.data.transforms",
    "ratio_subset": "lfi.data.subsets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lfi.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
