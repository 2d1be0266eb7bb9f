"""Detection samples: original sizes for scoring, classification sets as one-box detection sets, seeded
fractions of the training images (Table 7) and a COCO ground truth for datasets without a COCO json.

Samples follow `lfi.data.coco` (image, boxes XYXY, labels (K,), optional masks, image_id); batches come
from `lfi.data.collate.collate_detection` (bottom/right padding, pixel_mask, per-image `targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lfi.data.base import Samples


class WithOriginalSize(Samples):
    """Adds 'orig_size' (H, W) before any transform (predictions are scored in original coordinates), and
    turns a classification sample (int 'label', one box per object) into a detection one (labels (K,))."""

    def prepare(self, sample: dict, index: int) -> dict:
        sample["orig_size"] = tuple(int(v) for v in sample["image"].shape[-2:])
        if "labels" not in sample:
            if "label" not in sample:
                raise KeyError(f"sample {index}: a detection sample needs 'labels' (K,) or a class 'label'")
            sample["labels"] = torch.full(
                (len(sample["boxes"]),), int(sample.pop("label")), dtype=torch.int64
            )
            sample.pop("class_name", None)
        sample.setdefault("image_id", index)
        return sample


def fraction_subset(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """A seeded random `fraction` of the images (at least one), for the low-data setting (Table 7).

    Images, not classes, are sampled: a detection image holds several classes. Subsets of one seed are
    nested (a smaller fraction is a prefix of the same permutation).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[: max(1, round(fraction * len(dataset)))]))


def coco_ground_truth(dataset: Dataset, classes: Sequence[str]) -> dict[str, Any]:
    """A COCO instances dict (boxes only) of any detection dataset, in original coordinates, for COCOeval.

    For datasets without a COCO json (VOC, TinyImageNet): categories are 0..C-1 (category id = label);
    'iscrowd' (VOC: difficult) marks objects COCOeval ignores.
    Iterates the dataset once (reads every image).
    """
    images, annotations = [], []
    for index in range(len(dataset)):
        s = WithOriginalSize(dataset)[index]
        h, w = s["orig_size"]
        images.append({"id": int(s["image_id"]), "height": h, "width": w})
        crowd = s.get("iscrowd", torch.zeros(len(s["labels"]), dtype=torch.int64)).tolist()
        for box, label, is_crowd in zip(s["boxes"].tolist(), s["labels"].tolist(), crowd, strict=True):
            x0, y0, x1, y1 = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(s["image_id"]), "category_id": int(label),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(is_crowd),
            })  # fmt: skip
    categories = [{"id": i, "name": name} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}
