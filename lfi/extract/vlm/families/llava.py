"""LLaVA-1.5 (``model_type`` "llava"): pad to a square, one fixed G x G grid (336 px -> 24 x 24 tokens).

LLaVA-1.5 (``image_aspect_ratio="pad"``) pastes the image centred on a square of side max(H, W) in the
processor's mean colour; lfi pads itself (`expand_to_square`), so the processor's resize / centre crop of a
square changes no geometry. The G*G image tokens are the square's patches in raster order.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import Part, expand_to_square, image_box_on_grid, unpad_map


def _side(config: PretrainedConfig) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


class Llava15(Family):
    name = "llava-1.5"
    geometry = "expand-to-square (mean colour) undone: the grid spans the original image"

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        if model.config.vision_feature_select_strategy != "default":
            raise ValueError(
                "vision_feature_select_strategy must be 'default' (patch tokens only, a square grid), got "
                f"{model.config.vision_feature_select_strategy!r}"
            )

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        return (_side(config), _side(config))

    def prepare(self, image: Image.Image, processor: ProcessorMixin) -> Image.Image:
        # expand2square in LLaVA-1.5 fills with the processor's mean colour (as int(255 * mean)).
        fill = tuple(int(255 * m) for m in processor.image_processor.image_mean)
        return expand_to_square(image, fill)

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        side = _side(config)
        x0, y0, x1, y1 = image_box_on_grid(image_hw, side)
        cells = torch.arange(side + 1, dtype=torch.float64)
        part = Part(
            index=torch.arange(side * side).reshape(side, side),
            y_edges=(cells - y0) / (y1 - y0),
            x_edges=(cells - x0) / (x1 - x0),
        )
        return Layout(n_tokens=side * side, parts=(part,))

    def to_grid(
        self, att: torch.Tensor, layout: Layout, image_hw: tuple[int, int], out_hw: tuple[int, int]
    ) -> torch.Tensor:
        # `unpad_map` is the same placement on the square grid (kept: LLaVA-1.5 maps stay bit-identical).
        side = layout.parts[0].index.shape[0]
        return unpad_map(att.reshape(att.shape[0], side, side), image_hw, out_hw)


FAMILY = Llava15()
