"""Idefics3 (``model_type`` "idefics3"): image splitting into tiles + a global image, pixel-shuffled tokens.

The image processor resizes the image so that its longest edge is ``size["longest_edge"]`` (aspect kept), then
stretches it to (R * t, C * t), t = ``max_image_size["longest_edge"]`` (`resize_for_vision_encoder`; each
side rounded up to a multiple of t) and cuts R x C tiles of t x t, row-major, plus the whole image squashed
to t x t (the global image, last). An image that needs no split is only the global image (R = C = 0). Each
t x t frame gives (t / patch / scale)^2 tokens after the connector's pixel shuffle, in raster order. The
text holds, per tile, ``<fake_token_around_image><row_r_col_c>`` + its image tokens, then the global image's.
So tile (r, c)'s token (i, j) covers rows (r + (i, i + 1) / g) / R and columns (c + (j, j + 1) / g) / C of the
original image; the global image's tokens cover (i, i + 1) / g, (j, j + 1) / g.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import Part, cell_edges


def _tiles(processor: ProcessorMixin, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(R, C) tiles the image processor cuts the (H, W) image into (0, 0: the global image only)."""
    _, rows, cols = processor.image_processor.get_number_of_image_patches(*image_hw)
    return rows, cols


class Idefics3(Family):
    name = "idefics3"
    geometry = "tiles stretched over the image + global image, each a pixel-shuffled raster grid"
    input_names = ("input_ids", "pixel_values", "pixel_attention_mask")
    nested_images = True  # SmolVLM's processor reads a flat list as one sequence's images

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        tile = processor.image_processor.max_image_size["longest_edge"]
        vision = model.config.vision_config
        if tile != vision.image_size:
            raise ValueError(
                f"processor max_image_size {tile} px != vision_config.image_size {vision.image_size}"
            )
        side = vision.image_size // vision.patch_size // model.config.scale_factor
        if side * side != processor.image_seq_len:
            raise ValueError(
                f"processor image_seq_len {processor.image_seq_len} != {side}^2 tokens per frame"
            )

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        side = config.vision_config.image_size // config.vision_config.patch_size // config.scale_factor
        return (side, side)

    def expand(self, processor: ProcessorMixin, text: str, image_hw: tuple[int, int], n_tokens: int) -> str:
        rows, cols = _tiles(processor, image_hw)
        if text.count(processor.image_token) != 1:
            raise ValueError(f"rendered prompt must hold exactly one {processor.image_token!r}")
        # The processor's own placeholder string for an image of R x C tiles.
        return text.replace(
            processor.image_token, processor.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)
        )

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        g = config.vision_config.image_size // config.vision_config.patch_size // config.scale_factor
        rows, cols = _tiles(processor, image_hw)
        grid = torch.arange(g * g).reshape(g, g)
        inner = cell_edges(0, 1, g)
        parts = [
            Part(grid + (r * cols + c) * g * g, (r + inner) / rows, (c + inner) / cols)
            for r in range(rows)
            for c in range(cols)
        ]
        parts.append(Part(grid + rows * cols * g * g, inner, inner))  # the global image comes last
        return Layout(n_tokens=(rows * cols + 1) * g * g, parts=tuple(parts))


FAMILY = Idefics3()
