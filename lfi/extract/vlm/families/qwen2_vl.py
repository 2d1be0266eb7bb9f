"""Qwen2-VL / Qwen2.5-VL (``model_type`` "qwen2_vl", "qwen2_5_vl"): native resolution, 2 x 2 token merge.

The image processor resizes the whole image (no crop, no padding) to (H', W'), multiples of
patch_size * merge_size near the original size within [min_pixels, max_pixels] (`smart_resize`), cuts
patch_size patches and the vision tower merges each merge_size x merge_size block into one token; the
language model sees grid_thw = (1, H'/p, W'/p) / merge as (H'/(p m)) x (W'/(p m)) tokens in raster order
(the processor orders patches merge-block by merge-block so that the merger's output is raster order).
So token (i, j) covers rows [i, i + 1) / gh and columns [j, j + 1) / gw of the original image.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import Part, cell_edges

#: Default stored grid: 16 x 16 (a 448 px image is 16 x 16 merged tokens).
GRID = (16, 16)


class Qwen2VL(Family):
    name = "qwen2-vl"
    geometry = "whole image resized (smart_resize), merged token grid spans the original image"
    input_names = ("input_ids", "pixel_values", "image_grid_thw")
    optional_inputs = ("mm_token_type_ids",)  # newer transformers: M-RoPE reads it

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        merge = processor.image_processor.merge_size
        if merge != model.config.vision_config.spatial_merge_size:
            raise ValueError(
                f"processor merge_size {merge} != vision_config.spatial_merge_size "
                f"{model.config.vision_config.spatial_merge_size}"
            )

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        return GRID

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        t, h, w = (int(v) for v in enc["image_grid_thw"][b])
        merge = processor.image_processor.merge_size
        if t != 1:
            raise ValueError(f"image_grid_thw[{b}] has t = {t}; one still image per sequence is expected")
        gh, gw = h // merge, w // merge
        part = Part(torch.arange(gh * gw).reshape(gh, gw), cell_edges(0, 1, gh), cell_edges(0, 1, gw))
        return Layout(n_tokens=gh * gw, parts=(part,))


FAMILY = Qwen2VL()
