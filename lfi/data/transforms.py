"""Interaction maps as a torchvision `tv_tensors` type, so v2 transforms move them with the image.

An `InteractionMap` is the teacher's map on its own grid, float (1, h, w), untouched, and its *window*: the
rectangle of the map, in map cells, that the image's current canvas (H, W) shows. The geometric v2
functionals that an axis-aligned pipeline uses (resize, crop, resized_crop, center_crop, constant pad,
flips) move the window exactly as they move the image (a flip mirrors it: x0 > x1); none resamples the map.
`map_to_grid` then resamples the map under its window onto the student's grid once (`lfi.maps.crop_to_grid`,
the function of the GPU path too). Rotations, affine, perspective and elastic transforms would need a
resampled map: they raise. Colour, dtype and normalisation functionals are not registered, so v2 passes the
map through them untouched.

Flow: teacher grid (h, w) --`InteractionMap.over(map, image size)`--> window = the whole map --v2 pipeline
with the image, boxes, masks--> window of the crop --`map_to_grid`--> (gh, gw) on the student's patch grid,
re-normalised. A crop that leaves no mass gives an all-zero (invalid) map, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lfi.maps import crop_to_grid, is_valid_map

Window = tuple[float, float, float, float]  # x0, y0, x1, y1 in map cells


class InteractionMap(tv_tensors.TVTensor):
    """The teacher's map (1, h, w) float, non-negative, with `canvas_size` (H, W), the image's current size,
    `window`, the part of the map (x0, y0, x1, y1 in map cells) that the canvas spans, and `kept`, the part
    of the map that earlier crops left (a pad after a crop must not bring back what the crop cut away)."""

    canvas_size: tuple[int, int]
    window: Window
    kept: Window

    @classmethod
    def over(cls, map_hw: torch.Tensor, image_size: tuple[int, int]) -> InteractionMap:
        """A teacher map (h, w) over the whole image of `image_size` (teachers resize, they do not crop)."""
        if map_hw.ndim != 2:
            raise ValueError(f"InteractionMap.over expects a teacher map (h, w), got {tuple(map_hw.shape)}")
        h, w = map_hw.shape
        whole = (0.0, 0.0, float(w), float(h))
        return cls.of(map_hw[None].float(), tuple(image_size), whole, whole)

    @classmethod
    def of(
        cls, data: torch.Tensor, canvas_size: tuple[int, int], window: Window, kept: Window
    ) -> InteractionMap:
        if data.ndim != 3 or data.shape[0] != 1 or not data.is_floating_point():
            raise ValueError(
                f"InteractionMap expects a float tensor (1, h, w), got {tuple(data.shape)} {data.dtype}"
            )
        out = data.as_subclass(cls)
        out.canvas_size, out.window = (int(canvas_size[0]), int(canvas_size[1])), tuple(map(float, window))
        out.kept = tuple(map(float, kept))
        return out

    def box(self) -> torch.Tensor:
        """(4,) the window x0, y0, x1, y1 in map cells, as `lfi.maps.crop_to_grid` takes it."""
        return torch.tensor(self.window)

    def visible(self) -> torch.Tensor:
        """(h, w) the map without mass outside `kept` (a cell cut through keeps the mass of its inner part)."""
        x0, y0, x1, y1 = self.kept
        data = self.as_subclass(torch.Tensor)[0]
        return data * _inside(y0, y1, data.shape[0])[:, None] * _inside(x0, x1, data.shape[1])[None]


def _inside(lo: float, hi: float, n: int) -> torch.Tensor:
    """(n,) the fraction of each map cell [j, j + 1] inside [lo, hi]."""
    cells = torch.arange(n, dtype=torch.float32)
    return (torch.minimum(cells + 1, torch.tensor(hi)) - torch.maximum(cells, torch.tensor(lo))).clamp(0, 1)


def _cut(m: InteractionMap, top: float, left: float, height: int, width: int) -> InteractionMap:
    """The canvas rectangle (top, left, height, width) becomes the canvas (a crop; a pad when it reaches out)."""
    x0, y0, x1, y1 = m.window
    H, W = m.canvas_size
    sx, sy = (x1 - x0) / W, (y1 - y0) / H
    window = (x0 + sx * left, y0 + sy * top, x0 + sx * (left + width), y0 + sy * (top + height))
    c = m.kept  # what the canvas shows now is all that any later canvas may show
    kept = (max(c[0], min(x0, x1)), max(c[1], min(y0, y1)), min(c[2], max(x0, x1)), min(c[3], max(y0, y1)))
    return InteractionMap.of(m.as_subclass(torch.Tensor), (height, width), window, kept)


def _resized(
    m: InteractionMap, size: Sequence[int] | int | None, max_size: int | None = None
) -> InteractionMap:
    # the same output size as the image's resize (torchvision's rule, through its public keypoint kernel)
    size = [size] if isinstance(size, int) else size
    _, canvas = F.resize_keypoints(torch.zeros(0, 2), size=size, canvas_size=m.canvas_size, max_size=max_size)
    return InteractionMap.of(m.as_subclass(torch.Tensor), canvas, m.window, m.kept)


def _resize(
    m: InteractionMap, size: Any, *args: Any, max_size: int | None = None, **kwargs: Any
) -> InteractionMap:
    return _resized(m, size, max_size)


def _resized_crop(
    m: InteractionMap, top: int, left: int, height: int, width: int, size: Any, *args: Any, **kwargs: Any
) -> InteractionMap:
    return _resized(_cut(m, top, left, height, width), size)


def _center_crop(m: InteractionMap, output_size: Any) -> InteractionMap:
    output_size = [output_size] if isinstance(output_size, int) else list(output_size)
    shifted, canvas = F.center_crop_keypoints(torch.zeros(1, 2), m.canvas_size, output_size)
    return _cut(m, -float(shifted[0, 1]), -float(shifted[0, 0]), *canvas)


def _pad(m: InteractionMap, padding: Any, fill: Any = None, padding_mode: str = "constant") -> InteractionMap:
    if padding_mode != "constant":
        raise ValueError(
            f"InteractionMap: padding_mode {padding_mode!r} would copy image content; use 'constant'"
        )
    p = [padding] if isinstance(padding, int) else list(padding)
    left, top, right, bottom = p * 4 if len(p) == 1 else p * 2 if len(p) == 2 else p
    H, W = m.canvas_size
    return _cut(m, -top, -left, H + top + bottom, W + left + right)


def _flip(axis: int):
    def flip(m: InteractionMap) -> InteractionMap:
        w = list(m.window)
        w[axis], w[axis + 2] = w[axis + 2], w[axis]
        return InteractionMap.of(m.as_subclass(torch.Tensor), m.canvas_size, tuple(w), m.kept)

    return flip


def _unsupported(name: str):
    def refuse(m: InteractionMap, *args: Any, **kwargs: Any) -> InteractionMap:
        raise ValueError(
            f"F.{name} on an interaction map: only axis-aligned geometry (resize, crop, pad, flips) moves its "
            "window without resampling the map; leave this transform out of pipelines with an interaction store"
        )

    return refuse


_KERNELS = {
    F.resize: _resize, F.resized_crop: _resized_crop, F.crop: _cut, F.center_crop: _center_crop, F.pad: _pad,
    F.horizontal_flip: _flip(0), F.vertical_flip: _flip(1),
    **{f: _unsupported(f.__name__) for f in (F.affine, F.rotate, F.perspective, F.elastic)},
}  # fmt: skip
for _functional, _kernel in _KERNELS.items():
    F.register_kernel(_functional, InteractionMap)(_kernel)


def map_to_grid(m: InteractionMap, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """After the v2 pipeline: InteractionMap -> (map (gh, gw), valid () bool): the map under its window
    resampled once onto the student's patch grid (`lfi.maps.crop_to_grid`), re-normalised to sum 1; a map
    with no mass left (e.g. cropped away) is all zeros with valid False."""
    if not isinstance(m, InteractionMap):
        raise TypeError(
            f"map_to_grid expects an InteractionMap (InteractionMap.over), got {type(m).__name__}"
        )
    out = crop_to_grid(m.visible().clamp_min(0)[None], m.box()[None], tuple(grid))[0]
    return out, is_valid_map(out)
