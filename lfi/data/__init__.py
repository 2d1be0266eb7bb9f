"""Datasets, joint image/box/mask/interaction-map transforms, and the store-backed training wrapper.

Modules: `source` (zips or folders), `base` (sample format), `tinyimagenet`, `pacs`, `domainbed` (VLCS and
any DomainBed-layout set), `coco`, `osie`, `subsets` (ratio subsets), `registry` (`build_dataset`),
`transforms` (InteractionMap tv_tensor), `pipelines` (standard v2 pipelines), `interaction`
(`WithInteractionMaps`), `collate`.
"""

from lfi.data.collate import collate_classification, collate_detection
from lfi.data.interaction import WithInteractionMaps
from lfi.data.pipelines import classification_transforms, detection_transforms
from lfi.data.registry import build_dataset
from lfi.data.subsets import ratio_subset
from lfi.data.transforms import InteractionMap, map_to_grid, map_to_image_geometry

__all__ = [
    "InteractionMap",
    "WithInteractionMaps",
    "build_dataset",
    "classification_transforms",
    "collate_classification",
    "collate_detection",
    "detection_transforms",
    "map_to_grid",
    "map_to_image_geometry",
    "ratio_subset",
]
