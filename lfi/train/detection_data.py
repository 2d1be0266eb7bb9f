"""Detection data for I-DETR: datasets as detection samples, DETR targets, teacher maps, COCO ground truth.

Samples follow `lfi.data.coco` (image, boxes XYXY, labels (K,), optional masks, image_id); batches come
from `lfi.data.collate.collate_detection` (bottom/right padding, pixel_mask, per-image `targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from lfi.extract.oracle import OracleTeacher
from lfi.maps import normalize_map


class WithOriginalSize(Dataset):
    """Adds 'orig_size' (H, W) before any transform (predictions are scored in original coordinates), and
    turns a classification sample (int 'label', one box per object) into a detection one (labels (K,))."""

    def __init__(self, dataset: Dataset, transforms: Any = None) -> None:
        self.dataset, self.transforms = dataset, transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample.pop("data", None)
        sample["orig_size"] = tuple(int(v) for v in sample["image"].shape[-2:])
        if "labels" not in sample:
            if "label" not in sample:
                raise KeyError(f"sample {index}: a detection sample needs 'labels' (K,) or a class 'label'")
            sample["labels"] = torch.full(
                (len(sample["boxes"]),), int(sample.pop("label")), dtype=torch.int64
            )
            sample.pop("class_name", None)
        sample.setdefault("image_id", index)
        return self.transforms(sample) if self.transforms is not None else sample


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


def detr_labels(targets: Sequence[dict], padded: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """collate_detection targets -> HF DETR `labels`.

    class_labels (K,) int64; boxes (K, 4) cxcywh normalised by the image's unpadded size (as DETR does; the
    sine position embedding is normalised over the unpadded region too); masks (K, Hpad, Wpad) float,
    zero-padded to the batch's padded size, where the predicted masks live (only when targets carry masks).
    """
    out = []
    for t in targets:
        h, w = t["size"]
        xyxy = t["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
        cxcywh = torch.stack(
            [(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2] - xyxy[:, 0],
             xyxy[:, 3] - xyxy[:, 1]], dim=1,
        ) / torch.tensor([w, h, w, h], dtype=torch.float32)  # fmt: skip
        label = {"class_labels": torch.as_tensor(t["labels"], dtype=torch.int64), "boxes": cxcywh}
        if "masks" in t:
            m = t["masks"].as_subclass(torch.Tensor).float()
            label["masks"] = F.pad(m, (0, padded[1] - m.shape[-1], 0, padded[0] - m.shape[-2]))
        out.append(label)
    return out


def oracle_maps(targets: Sequence[dict], source: str = "boxes", stride: int = 8) -> list[torch.Tensor]:
    """The oracle teacher's dense C_VLM (Eq. 12 with the ground truth as the objects, back = 0) of each
    transformed image, on a (H // stride, W // stride) grid over its unpadded region: (h_i, w_i) each."""
    maps = []
    for t in targets:
        h, w = t["size"]
        teacher = OracleTeacher(grid=(max(1, h // stride), max(1, w // stride)), source=source)
        sample = {
            "image": torch.empty(3, h, w, dtype=torch.uint8),
            "boxes": t["boxes"].as_subclass(torch.Tensor),
        }
        if source == "masks":
            sample["masks"] = t["masks"].as_subclass(torch.Tensor)
        maps.append(normalize_map(teacher.fore_map(sample)))
    return maps


def stored_maps(batch: dict, stride: int) -> list[torch.Tensor]:
    """Per-image maps from a batch of `WithInteractionMaps(..., grid=stride)` samples: (H//s, W//s) each,
    cut out of collate_detection's padded (B, gh, gw) maps (zeroed where the teacher's map was invalid)."""
    if "map" not in batch:
        raise KeyError("the batch has no 'map': wrap the dataset in WithInteractionMaps to read a store")
    out = []
    for m, valid, t in zip(batch["map"], batch["map_valid"], batch["targets"], strict=True):
        h, w = t["size"]
        cut = m[: max(1, h // stride), : max(1, w // stride)]
        out.append(cut if bool(valid) else torch.zeros_like(cut))
    return out


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
