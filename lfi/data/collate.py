"""Batch samples for DataLoaders: classification (equal-size images) and detection (padded, target lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision import tv_tensors

# Per-image fields of a detection sample that go into its target dict rather than into batch tensors.
_PER_IMAGE = ("image", "map", "map_box", "map_valid")


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor)


def collate_classification(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """List of samples -> dict: equal-shape tensors stacked (image (B, 3, H, W), map (B, gh, gw),
    map_valid (B,)), ints -> int64 (B,) (label), everything else (strings, boxes of varying K) -> lists."""
    if not batch:
        raise ValueError("collate_classification: empty batch")
    out: dict[str, Any] = {}
    for k in batch[0]:
        values = [s[k] for s in batch]
        is_box_like = isinstance(values[0], (tv_tensors.BoundingBoxes, tv_tensors.Mask))
        if isinstance(values[0], torch.Tensor) and not is_box_like and len({v.shape for v in values}) == 1:
            out[k] = torch.stack([_plain(v) for v in values])
        elif isinstance(values[0], bool | int) and all(type(v) is type(values[0]) for v in values):
            out[k] = torch.tensor(values)
        else:
            out[k] = values
    return out


def _pad_to(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero-pad the last two dims at the bottom/right to (h, w)."""
    return F.pad(_plain(t), (0, w - t.shape[-1], 0, h - t.shape[-2]))


def collate_detection(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """List of detection samples -> dict (DETR-style padding at the bottom/right):

    image       float (B, 3, Hmax, Wmax), zero-padded
    pixel_mask  bool (B, Hmax, Wmax): True on real pixels
    targets     list of B dicts: every other field (boxes (K, 4) XYXY absolute, labels (K,), iscrowd,
                masks (K, H, W), image_id, key, ...) plus 'size' = (H, W) before padding
    map         the teacher's maps as `WithInteractionMaps(grid=None)` leaves them: float (B, h, w), or a
                list where their grids differ, with map_box (B, 4) (each map's window over its image) and
                map_valid (B,) bool, when the samples carry maps
    """
    if not batch:
        raise ValueError("collate_detection: empty batch")
    hmax = max(s["image"].shape[-2] for s in batch)
    wmax = max(s["image"].shape[-1] for s in batch)
    pixel_mask = torch.zeros(len(batch), hmax, wmax, dtype=torch.bool)
    for i, s in enumerate(batch):
        pixel_mask[i, : s["image"].shape[-2], : s["image"].shape[-1]] = True
    out: dict[str, Any] = {
        "image": torch.stack([_pad_to(s["image"], hmax, wmax) for s in batch]),
        "pixel_mask": pixel_mask,
        "targets": [
            {k: v for k, v in s.items() if k not in _PER_IMAGE} | {"size": tuple(s["image"].shape[-2:])}
            for s in batch
        ],
    }
    if "map" in batch[0]:
        maps = [_plain(s["map"]) for s in batch]
        out["map"] = torch.stack(maps) if len({m.shape for m in maps}) == 1 else maps
        out["map_box"] = torch.stack([s["map_box"] for s in batch])
        out["map_valid"] = torch.stack([torch.as_tensor(s["map_valid"]) for s in batch])
    return out
