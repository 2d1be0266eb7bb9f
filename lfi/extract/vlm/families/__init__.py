"""VLM families: how each architecture lays out its image tokens, and the registry that picks one.

A family knows, for one kind of Hugging Face VLM (its config's ``model_type``), what the teacher cannot read
from the token ids alone: the image it hands the processor (`Family.prepare`), the text the processor
tokenises (`Family.expand`), the model inputs (`Family.input_names`, `Family.optional_inputs`), and the
*layout*: which of a sequence's image tokens cover which region of the original image (`Family.layout`:
tiles, merges, base/thumbnail images, padding, newline tokens). `Family.to_grid` then turns the answer's
attention over the image tokens (C_VLM before Eq. 11/12) into maps on a fixed grid spanning the original image.

Adding a family = one module under ``lfi/extract/vlm/families/`` defining ``FAMILY`` (a `Family`) plus one
row in `FAMILIES` (model_type -> module); its tiny model in tests/extract_vlm/conftest.py (`FAMILY_BUILDERS`)
puts it through the geometry test (the tokens whose features change with a region of the image must be
placed on that region), the eager-attention reference and the CLI test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, PretrainedConfig, PreTrainedModel, ProcessorMixin

from lfi.extract.vlm.geometry import Part, place_parts
from lfi.extract.vlm.prompts import conversation
from lfi.extract.vlm.tokens import expanded_text

#: model_type (config.json) -> module defining FAMILY. One row per family: the only place to register one.
FAMILIES: dict[str, str] = {
    "llava": "lfi.extract.vlm.families.llava",
    "llava_next": "lfi.extract.vlm.families.llava_next",
    "qwen2_vl": "lfi.extract.vlm.families.qwen2_vl",
    "qwen2_5_vl": "lfi.extract.vlm.families.qwen2_vl",
    "idefics3": "lfi.extract.vlm.families.idefics3",
    "smolvlm": "lfi.extract.vlm.families.smolvlm",
    "paligemma": "lfi.extract.vlm.families.paligemma",
    "gemma3": "lfi.extract.vlm.families.gemma3",
}


@dataclass(frozen=True)
class Layout:
    """Where one sequence's image tokens sit on the original image.

    n_tokens: how many image tokens the sequence holds (checked against the ids: a mismatch means the
    processor or the model lays tokens out differently than the family assumes). parts: blocks of tokens,
    each tiling a box of the image; tokens in no part (e.g. LLaVA-NeXT's row-end newlines) carry no place.
    """

    n_tokens: int
    parts: tuple[Part, ...]


class Family:
    """One VLM architecture's view of images (subclass per family; defaults fit single-image chat models)."""

    #: Short name recorded in the store's metadata, e.g. "llava-1.5".
    name: str = ""
    #: How the map is put back on the original image (recorded in the store's metadata).
    geometry: str = ""
    #: Keys of the processor's output the model's forward takes (input_ids first).
    input_names: tuple[str, ...] = ("input_ids", "pixel_values")
    #: Keys passed on where the processor returns them (they depend on the transformers version).
    optional_inputs: tuple[str, ...] = ()
    #: Whether the processor wants one list of images per sequence (it reads a flat list as one sequence's).
    nested_images: bool = False
    #: Whether background_mode "generate" works (the forced answer start continues the rendered text).
    generates: bool = True

    def check(self, model: PreTrainedModel, processor: ProcessorMixin) -> None:
        """Raise ValueError where the model or processor settings break the family's layout assumptions."""

    def default_grid(self, config: PretrainedConfig, processor: ProcessorMixin) -> tuple[int, int]:
        """The stored map's grid (h, w) when the user sets none."""
        raise NotImplementedError

    def prepare(self, image: Image.Image, processor: ProcessorMixin) -> Image.Image:
        """The image handed to the processor (default: as is; the processor's own resizing is in `layout`)."""
        return image

    def image_token(self, processor: ProcessorMixin) -> str:
        """The text of one image token in the expanded text (default: the processor's ``image_token``)."""
        return processor.image_token

    def batch_images(self, images: list[Image.Image]) -> list[Any]:
        """The processor's ``images`` argument for one image per sequence: a flat list, or with
        `nested_images` one list per sequence."""
        return [[image] for image in images] if self.nested_images else images

    def render(self, processor: ProcessorMixin, prompt: str, answer: str | None) -> str:
        """Chat text of the user turn (image + prompt) and, if given, the assistant's answer."""
        return processor.apply_chat_template(conversation(prompt, answer), tokenize=False)

    def expand(self, processor: ProcessorMixin, text: str, image_hw: tuple[int, int], n_tokens: int) -> str:
        """The text the processor tokenised: `text` with its image placeholder expanded (offsets point into it).

        Default: the placeholder repeated once per image token (LLaVA, LLaVA-NeXT, Qwen2-VL processors).
        """
        return expanded_text(text, processor.image_token, n_tokens)

    def mark_answer(self, enc: BatchFeature, b: int, first: int) -> None:
        """Mark sequence `b`'s tokens from row `first` (the answer's first) on as the answer, in place, for
        models that attend to the answer differently from the prompt (PaliGemma). Default: nothing."""

    def layout(
        self,
        config: PretrainedConfig,
        processor: ProcessorMixin,
        enc: BatchFeature,
        b: int,
        image_hw: tuple[int, int],
    ) -> Layout:
        """Layout of sequence `b` of the processor output `enc`, whose image was (H, W) = image_hw."""
        raise NotImplementedError

    def to_grid(
        self, att: torch.Tensor, layout: Layout, image_hw: tuple[int, int], out_hw: tuple[int, int]
    ) -> torch.Tensor:
        """att: (K, N) attention of K entries over the N image tokens -> (K, h, w), each L1-normalised."""
        return place_parts(att, layout.parts, out_hw)


def family_for(config: PretrainedConfig | dict[str, Any]) -> Family:
    """The family of a model config (or its config.json dict), by ``model_type``; clear error if unknown."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"no lfi VLM family for model_type {model_type!r}; supported: {sorted(FAMILIES)} "
            "(adding one = a module in lfi/extract/vlm/families/ + a row in FAMILIES)"
        )
    return importlib.import_module(FAMILIES[model_type]).FAMILY
