"""PaliGemma (``model_type`` "paligemma", Gemma 1 text model): one square image, prefix-LM attention.

The image processor resizes the whole image to the vision tower's square (no crop, no padding) and the
(image_size / patch_size)^2 image tokens come first, in raster order, then BOS, the prompt and "\\n". The
prefix (image + prompt) attends bidirectionally; the answer (the "suffix", token_type_ids 1) causally. lfi
puts the answer in the text and marks its tokens as the suffix (`mark_answer`), so the answer rows see what
they see when PaliGemma answers. Token (i, j) covers rows [i, i + 1) / G and columns [j, j + 1) / G of the
original image. PaliGemma 2 (Gemma 2: soft-capped attention logits) is refused: the capture computes plain
softmax(q k^T) and SDPA cannot soft-cap.
"""

from __future__ import annotations

from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.families import Family, Layout
from lfi.extract.vlm.geometry import square_part


def _side(config: PretrainedConfig) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


class PaliGemma(Family):
    name = "paligemma"
    geometry = "whole image resized to the square input: the token grid spans the original image"
    input_names = ("input_ids", "pixel_values", "token_type_ids")
    generates = False  # the forced answer start would have to be a suffix while generating

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        if getattr(model.config.text_config, "attn_logit_softcapping", None):
            raise ValueError(
                "PaliGemma 2 (Gemma 2, soft-capped attention logits) is not supported: the capture computes "
                "plain softmax(q k^T)"
            )
        size, side = processor.image_processor.size, model.config.vision_config.image_size
        if (size.get("height"), size.get("width")) != (side, side):
            raise ValueError(f"processor size {dict(size)} != the vision tower's {side} x {side} square")
        if processor.image_seq_length != _side(model.config) ** 2:
            raise ValueError(
                f"processor image_seq_length {processor.image_seq_length} != {_side(model.config)}^2"
            )

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        return (_side(config), _side(config))

    def render(self, processor: ProcessorMixin, prompt: str, answer: str | None) -> str:
        """PaliGemma has no chat template: "<image>" + prompt; the processor adds BOS after the image and a
        final "\\n"; the answer follows the prompt after "\\n" (where PaliGemma's suffix starts)."""
        return processor.image_token + prompt + ("" if answer is None else "\n" + answer)

    def expand(self, processor: ProcessorMixin, text: str, image_hw: tuple[int, int], n_tokens: int) -> str:
        if text.count(processor.image_token) != 1:
            raise ValueError(f"rendered prompt must hold exactly one {processor.image_token!r}")
        image = processor.image_token * n_tokens + processor.tokenizer.bos_token
        return text.replace(processor.image_token, image) + "\n"

    def mark_answer(self, enc: BatchFeature, b: int, first: int) -> None:
        enc["token_type_ids"][b, first:] = 1  # the suffix (and the pads after it): causal attention

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


FAMILY = PaliGemma()
