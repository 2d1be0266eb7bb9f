"""Standard torchvision v2 pipelines over whole samples (dicts): image, boxes, masks and interaction map
move together (see `lfi.data.transforms`); labels, strings and bytes pass through.

Classification follows the ViT/DeiT recipe: train = RandomResizedCrop + horizontal flip, eval = Resize to
size / crop_pct + CenterCrop (timm's crop_pct, 0.875 for DeiT). Detection follows DETR's multi-scale resize
(shorter side in `scales`, longer side at most `max_size`) + flip; DETR's extra random-size-crop branch is
not included. Both end with ToDtype(float32, scale) + Normalize(mean, std) of the model (images only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DETR_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


def classification_transforms(
    train: bool,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.08, 1.0),
    crop_pct: float = 0.875,
) -> v2.Transform:
    """Sample dict -> sample dict with image float (3, size, size) normalised; boxes/map moved with it."""
    if train:
        geometry = [v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(int(size / crop_pct), antialias=True), v2.CenterCrop(size)]
    return v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def detection_targets(sample: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """Per-box tensors that SanitizeBoundingBoxes must filter with the boxes (masks are found by type)."""
    return tuple(sample[k] for k in ("labels", "iscrowd") if k in sample)


def detection_transforms(
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scales: Sequence[int] = DETR_SCALES,
    max_size: int = 1333,
) -> v2.Transform:
    """Sample dict (image, boxes, labels, optional masks/iscrowd/map) -> transformed dict; boxes left
    degenerate by the geometry are removed with their labels, iscrowd and masks."""
    if train:
        geometry = [v2.RandomHorizontalFlip(), v2.RandomShortestSize(list(scales), max_size=max_size)]
    else:
        geometry = [v2.Resize(max(scales), max_size=max_size, antialias=True)]
    return v2.Compose(
        [
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(labels_getter=detection_targets),
        ]
    )
