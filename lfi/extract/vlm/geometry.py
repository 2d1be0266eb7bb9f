"""Image geometry of the LLaVA-1.5 input: boxes drawn as visual prompts, pad-to-square, and its undoing.

LLaVA-1.5 (``image_aspect_ratio="pad"``) pastes the image centred on a square of side max(H, W) filled
with the image processor's mean colour, then resizes the square to the vision tower's input
(336 px -> 24x24 tokens).
lfi does this padding itself (`expand_to_square`) before the processor sees the image, so the geometry is
known exactly whatever the processor's own ``do_pad``/centre-crop settings are (a square image is neither
padded nor cropped by them).

`unpad_map` undoes it on the token grid: it cuts out the region of the square that holds the original image
(a box with fractional token coordinates) and resamples it to a fixed grid that spans exactly the original
image, so cell (i, j) of the stored map covers rows [i*H/h, (i+1)*H/h) and columns [j*W/w, (j+1)*W/w) of the
original image, for every aspect ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from lfi.maps import normalize_map


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Paste `image` (W, H) centred on a max(W, H) square of colour `fill` (as LLaVA-1.5's expand2square)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    return square


def image_box_on_grid(image_hw: tuple[int, int], grid_side: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the original image inside the padded square, in token-grid units [0, grid_side].

    image_hw: (H, W) of the original image. The offsets match `expand_to_square` (integer pixel paste).
    """
    h, w = image_hw
    side = max(h, w)
    scale = grid_side / side
    x0, y0 = (side - w) // 2, (side - h) // 2
    return x0 * scale, y0 * scale, (x0 + w) * scale, (y0 + h) * scale


def unpad_map(maps: torch.Tensor, image_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Cut the original image's region out of maps on the padded square's token grid and resample it.

    maps: (C, G, G) non-negative maps over the square's G x G token grid.
    image_hw: (H, W) of the original image. out_hw: (h, w) of the output grid, which spans the original image.
    Returns (C, h, w), each map L1-normalised (all-zero stays all-zero). Resampling is exact area averaging
    with each token constant over its patch, so nothing of the padding leaks into the result.
    """
    if maps.dim() != 3 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (C, G, G) on a square token grid, got shape {tuple(maps.shape)}")
    side = maps.shape[-1]
    x0, y0, x1, y1 = image_box_on_grid(image_hw, side)
    rows = _overlaps(y0, y1, out_hw[0], side)
    cols = _overlaps(x0, x1, out_hw[1], side)
    return normalize_map(rows @ maps.float() @ cols.T)


def _overlaps(lo: float, hi: float, n_out: int, side: int) -> torch.Tensor:
    """(n_out, side): overlap of output cell i ([lo, hi] split evenly) with token cell [j, j + 1]."""
    edges = torch.linspace(lo, hi, n_out + 1, dtype=torch.float64)
    cells = torch.arange(side, dtype=torch.float64)
    start = torch.maximum(edges[:-1, None], cells[None])
    end = torch.minimum(edges[1:, None], cells[None] + 1)
    return (end - start).clamp_min(0).float()


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    color: tuple[int, int, int] = (255, 0, 0),
    width: int | None = None,
) -> Image.Image:
    """Visual prompt (paper Eq. 12): a copy of `image` with each XYXY pixel box outlined.

    width: line width in pixels; default scales with the image so that it stays about 3 px at 336 px input.
    """
    out = image.copy()
    draw = ImageDraw.Draw(out)
    line = width if width is not None else max(1, round(max(image.size) / 112))
    for k, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"boxes[{k}] must be XYXY (4 numbers), got {list(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise ValueError(f"boxes[{k}] must be XYXY with x1 >= x0 and y1 >= y0, got {list(box)}")
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
    return out
