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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Part:
    """A block of image tokens tiling a box of the original image (a tile, a base image, a merged grid).

    index: (gh, gw) long, positions among the sequence's image tokens (0..N-1) in image raster order.
    y_edges: (gh + 1,), x_edges: (gw + 1,) float64, increasing: the edges of the token cells as fractions of
    the original image's height and width. Cells, or parts of cells, outside [0, 1] cover padding.
    """

    index: torch.Tensor
    y_edges: torch.Tensor
    x_edges: torch.Tensor


def cell_edges(lo: float, hi: float, n: int) -> torch.Tensor:
    """(n + 1,) float64 edges of n equal cells spanning [lo, hi]."""
    return torch.linspace(lo, hi, n + 1, dtype=torch.float64)


def square_part(side: int) -> Part:
    """A side x side grid of image tokens, row-major, covering the whole image (a fixed square resize)."""
    return Part(torch.arange(side * side).reshape(side, side), cell_edges(0, 1, side), cell_edges(0, 1, side))


def _shares(edges: torch.Tensor, n_out: int) -> torch.Tensor:
    """(n_out, n) share of token cell j (between edges j, j + 1) falling in output cell i of [0, 1]."""
    out = cell_edges(0.0, 1.0, n_out)
    start = torch.maximum(out[:-1, None], edges[None, :-1])
    end = torch.minimum(out[1:, None], edges[None, 1:])
    return ((end - start).clamp_min(0) / (edges[1:] - edges[:-1])[None]).float()


def place_parts(att: torch.Tensor, parts: Sequence[Part], out_hw: tuple[int, int]) -> torch.Tensor:
    """Put each image token's attention mass on the region of the original image it covers.

    att: (K, N) non-negative attention of K entries over the N image tokens. Each token's mass is spread over
    the output cells its box overlaps, in proportion to the overlap (mass outside the image, on padding, is
    dropped); parts add up (a base image and its tiles both count). Returns (K, h, w) on a grid spanning the
    original image, each map L1-normalised (all-zero stays all-zero).
    """
    out = torch.zeros(att.shape[0], *out_hw)
    for part in parts:
        block = att[:, part.index].float()  # (K, gh, gw)
        out += _shares(part.y_edges, out_hw[0]) @ block @ _shares(part.x_edges, out_hw[1]).T
    return normalize_map(out)


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
