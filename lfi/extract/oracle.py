"""Oracle teacher: interaction maps from ground-truth boxes or instance masks (an upper-bound reference).

fore = the fraction of each grid cell covered by the object(s), area-exact: an image pixel (H, W) is
covered by the fraction of it a box spans (boxes have sub-pixel edges), pixel coverage is then averaged
into the cells of an (h, w) grid with exact area weights, so grids that do not divide the image still
sum pixel areas correctly. back = 0 (the ground truth says nothing about where a background is, and a
positive back term would only clip partly covered edge cells), so Eq. 11 reduces to normalising fore.

Instances combine as a union by default (overlaps count once: the map says *where* objects are), or
as Eq. 12's literal sum_k C_obj^(k) with combine="sum" (overlaps count once per instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from lfi.extract.teacher import Sample, Teacher, TeacherOutput, image_hw, register_teacher


def interval_coverage(lo: torch.Tensor, hi: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Fraction of each bin covered by each interval [lo, hi).

    lo, hi: (K,) interval ends; edges: (n + 1,) increasing bin edges. Returns (K, n) in [0, 1].
    """
    left, right = edges[:-1], edges[1:]
    overlap = torch.minimum(hi[:, None], right) - torch.maximum(lo[:, None], left)
    return overlap.clamp(min=0) / (right - left)


def area_weights(size: int, cells: int) -> torch.Tensor:
    """(cells, size): weight of pixel p in cell i = |pixel p ∩ cell i| / |cell i| (rows sum to 1)."""
    cell_edges = torch.linspace(0, size, cells + 1, dtype=torch.float64)
    overlap = interval_coverage(cell_edges[:-1], cell_edges[1:], torch.arange(size + 1, dtype=torch.float64))
    return overlap / (size / cells)  # overlap is in pixel widths; a cell is size / cells pixels wide


def box_coverage(boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Per-pixel coverage of each box: boxes (K, 4) XYXY pixels -> (K, H, W) in [0, 1]."""
    height, width = hw
    b = boxes.to(torch.float64)
    cov_y = interval_coverage(b[:, 1], b[:, 3], torch.arange(height + 1, dtype=torch.float64))
    cov_x = interval_coverage(b[:, 0], b[:, 2], torch.arange(width + 1, dtype=torch.float64))
    return cov_y[:, :, None] * cov_x[:, None, :]


def decode_masks(masks: Any, hw: tuple[int, int], where: str) -> torch.Tensor:
    """Instance masks -> (K, H, W) float64: from a (K, H, W) tensor or a list of COCO segmentations."""
    height, width = hw
    if isinstance(masks, torch.Tensor):
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != (height, width):
            raise ValueError(f"{where}: masks must be (K, {height}, {width}), got {tuple(masks.shape)}")
        return masks.to(torch.float64)
    from pycocotools import mask as mask_utils  # COCO segmentations only: box oracles run without it

    decoded = []
    for seg in masks:
        if isinstance(seg, list):  # polygons [[x0, y0, x1, y1, ...], ...]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg, dict) and "counts" in seg:
            rle = seg
        else:
            raise ValueError(f"{where}: a COCO segmentation must be a polygon list or an RLE dict")
        decoded.append(torch.from_numpy(mask_utils.decode(rle).astype(np.float64)))
    if not decoded:
        return torch.zeros(0, height, width, dtype=torch.float64)
    return torch.stack(decoded)


class OracleTeacher(Teacher):
    """Ground-truth teacher. grid: (h, w) of the maps; source: "boxes" or "masks"; combine: "union"|"sum"."""

    name = "oracle"

    def __init__(
        self,
        grid: tuple[int, int] = (14, 14),
        source: Literal["boxes", "masks"] = "boxes",
        combine: Literal["union", "sum"] = "union",
    ) -> None:
        if source not in ("boxes", "masks"):
            raise ValueError(f"oracle source must be 'boxes' or 'masks', got {source!r}")
        if combine not in ("union", "sum"):
            raise ValueError(f"oracle combine must be 'union' or 'sum', got {combine!r}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.source = source
        self.combine = combine

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "source": self.source, "combine": self.combine, "back": "zero"}

    def fore_map(self, sample: Sample) -> torch.Tensor:
        """(h, w) coverage of the sample's objects on the grid (not normalised)."""
        hw = image_hw(sample["image"])
        where = sample.get("relpath", "<sample>")
        if self.source == "masks":
            if "masks" not in sample:
                raise KeyError(f"{where}: oracle source='masks' needs the sample's 'masks'")
            pixels = decode_masks(sample["masks"], hw, where)
        else:
            boxes = torch.as_tensor(sample["boxes"], dtype=torch.float64).reshape(-1, 4)
            pixels = box_coverage(boxes, hw)
        if pixels.shape[0] == 0:  # no objects: an all-zero map, handled by the empty policy
            per_pixel = torch.zeros(hw, dtype=torch.float64)
        elif self.combine == "union":
            per_pixel = pixels.amax(0)
        else:
            per_pixel = pixels.sum(0)
        cells = area_weights(hw[0], self.grid[0]) @ per_pixel @ area_weights(hw[1], self.grid[1]).T
        return cells.float()

    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        fore = torch.stack([self.fore_map(s) for s in batch])
        return TeacherOutput(fore=fore, back=torch.zeros_like(fore))


@register_teacher("oracle")
def build_oracle(**kwargs: Any) -> OracleTeacher:
    return OracleTeacher(**kwargs)
