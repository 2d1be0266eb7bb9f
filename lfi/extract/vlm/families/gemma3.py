"""Gemma 3 (``model_type`` "gemma3", the 4B-27B checkpoints): one square image, average-pooled tokens.

The image processor resizes the whole image to the SigLIP square (896 px: no crop, no padding; pan-and-scan
crops, off in the checkpoints' settings, are refused), the tower gives (896 / 14)^2 = 64 x 64 patch features
and the projector average-pools them to T x T tokens (T^2 = ``mm_tokens_per_image`` = 256), in raster
order. The processor replaces the prompt's ``<start_of_image>`` with "\\n\\n<start_of_image>" + T^2 image
tokens + "<end_of_image>\\n\\n". Image tokens see each other bidirectionally (``token_type_ids`` 1), text
is causal, and sliding-window layers get their window through the mask the capture is handed. Token (i, j)
covers rows [i, i + 1) / T and columns [j, j + 1) / T of the original image.
"""

from __future__ import annotations

import math

from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import square_part


def _side(config: PretrainedConfig) -> int:
    return math.isqrt(config.mm_tokens_per_image)


class Gemma3(Family):
    name = "gemma3"
    geometry = "whole image resized to the square input, patches average-pooled: the grid spans the image"
    input_names = ("input_ids", "pixel_values", "token_type_ids")
    nested_images = True  # the processor reads a flat list as one sequence's images

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        images = processor.image_processor
        if images.do_pan_and_scan:
            raise ValueError("Gemma 3 pan-and-scan crops are not supported: set do_pan_and_scan=False")
        if getattr(model.config.text_config, "attn_logit_softcapping", None):
            raise ValueError(
                "soft-capped attention logits are not supported: the capture computes softmax(q k^T)"
            )
        side = model.config.vision_config.image_size
        if (images.size.get("height"), images.size.get("width")) != (side, side):
            raise ValueError(
                f"processor size {dict(images.size)} != the vision tower's {side} x {side} square"
            )
        if processor.image_seq_length != _side(model.config) ** 2 or _side(model.config) ** 2 != (
            model.config.mm_tokens_per_image
        ):
            raise ValueError(
                f"processor image_seq_length {processor.image_seq_length} and mm_tokens_per_image "
                f"{model.config.mm_tokens_per_image} must be one square number"
            )

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        return (_side(config), _side(config))

    def image_token(self, processor: ProcessorMixin) -> str:
        return processor.tokenizer.image_token  # the processor's own image_token is the start-of-image mark

    def expand(self, processor: ProcessorMixin, text: str, image_hw: tuple[int, int], n_tokens: int) -> str:
        if text.count(processor.boi_token) != 1:
            raise ValueError(f"rendered prompt must hold exactly one {processor.boi_token!r}")
        return text.replace(processor.boi_token, processor.full_image_sequence)

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        side = _side(config)
        return Layout(n_tokens=side * side, parts=(square_part(side),))


FAMILY = Gemma3()
