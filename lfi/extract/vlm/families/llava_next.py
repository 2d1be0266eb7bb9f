"""LLaVA-NeXT (``model_type`` "llava_next"): any-res tiles + a base image + row-end newline tokens, unpadded.

The image processor picks the best resolution (bh, bw) of ``image_grid_pinpoints`` for the (H, W) image,
resizes the image into it keeping the aspect ratio (new_h, new_w; `get_patch_output_size`), pastes it centred
on (bh, bw) (black padding) and cuts tiles of the vision tower's size; the first "tile" is the whole image
squashed to a square (the base image). The model puts the base image's G x G tokens first, then stitches
the tiles' tokens into one (bh/t * G) x (bw/t * G) grid, crops the padding rows or columns
(`unpad_image`: ``padding`` token rows/cols off each side) and appends the newline token to every row.
So: base token (i, j) covers rows [i, i + 1) / G of the whole image; a kept tile token covers canvas pixels
(row + padding) * t / G ..., i.e. image fraction (canvas pixel - paste offset) / new size; newlines cover
nothing. Both parts count (`place_parts` adds their mass).
"""

from __future__ import annotations

import math

import torch
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin
from transformers.image_processing_utils import select_best_resolution

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import Part, cell_edges


def _resized(hw: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) of an (H, W) image fitted into target (bh, bw), as transformers' get_patch_output_size."""
    (h, w), (th, tw) = hw, target
    if tw / w < th / h:
        return min(math.ceil(h * tw / w), th), tw
    return th, min(math.ceil(w * th / h), tw)


def _unpad(hw: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """Token rows and columns `unpad_image` crops off each side of the (cur_h, cur_w) grid: (rows, cols)."""
    (h, w), (ch, cw) = hw, grid
    if w / h > cw / ch:
        return (ch - int(round(h * (cw / w), 7))) // 2, 0
    return 0, (cw - int(round(w * (ch / h), 7))) // 2


def _axis(n_kept: int, cut: int, tokens_per_px: float, paste: int, size: int) -> torch.Tensor:
    """Edges of the kept token cells along one axis as fractions of the original image."""
    pixels = torch.arange(cut, cut + n_kept + 1, dtype=torch.float64) / tokens_per_px
    return (pixels - paste) / size


class LlavaNext(Family):
    name = "llava-next"
    geometry = "any-res tiles (unpadded) + base image placed on the original image; newline tokens dropped"
    input_names = ("input_ids", "pixel_values", "image_sizes")

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        config, image_processor = model.config, processor.image_processor
        if config.vision_feature_select_strategy != "default":
            raise ValueError(
                "vision_feature_select_strategy must be 'default' (patch tokens only), got "
                f"{config.vision_feature_select_strategy!r}"
            )
        tile = image_processor.crop_size["height"]
        if tile != config.vision_config.image_size:
            raise ValueError(
                f"processor tile {tile} px != vision_config.image_size {config.vision_config.image_size}"
            )
        if [list(p) for p in image_processor.image_grid_pinpoints] != [
            list(p) for p in config.image_grid_pinpoints
        ]:
            raise ValueError("processor and model disagree on image_grid_pinpoints")

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        side = config.vision_config.image_size // config.vision_config.patch_size
        return (side, side)

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        tile = config.vision_config.image_size
        side = tile // config.vision_config.patch_size
        hw = tuple(int(v) for v in enc["image_sizes"][b])  # what the model unpads with: the original (H, W)
        best = select_best_resolution(hw, config.image_grid_pinpoints)
        new_h, new_w = _resized(hw, best)
        paste_y, paste_x = (best[0] - new_h) // 2, (best[1] - new_w) // 2
        full = (best[0] // tile * side, best[1] // tile * side)
        cut_y, cut_x = _unpad(hw, full)
        kh, kw = full[0] - 2 * cut_y, full[1] - 2 * cut_x
        base = Part(
            torch.arange(side * side).reshape(side, side), cell_edges(0, 1, side), cell_edges(0, 1, side)
        )
        rows = torch.arange(kh)[:, None] * (kw + 1) + torch.arange(kw)[None]  # each row ends with a newline
        tiles = Part(
            index=side * side + rows,
            y_edges=_axis(kh, cut_y, side / tile, paste_y, new_h),
            x_edges=_axis(kw, cut_x, side / tile, paste_x, new_w),
        )
        return Layout(n_tokens=side * side + kh * (kw + 1), parts=(base, tiles))


FAMILY = LlavaNext()
