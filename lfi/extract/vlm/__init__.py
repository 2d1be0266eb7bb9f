"""The VLM teachers (Hugging Face transformers): paper Sec. 4.2, Eq. 10-12.

`VLMTeacher` turns images (+ class names, or boxes for dense tasks) into C_fore / C_back maps from the
attention of the teacher-forced answer words to the image tokens, captured on the fly by the "lfi_capture"
attention function (`capture`), placed on the original image by the model's family (`families`).
Registered as teacher "hf" (any supported family, picked from the config's model_type:
``build_teacher("hf", model=ID_OR_PATH)``) and "llava" (LLaVA-1.5, the paper's teacher:
``build_teacher("llava", checkpoint=...)``).
"""

from __future__ import annotations

from typing import Any

from lfi.extract.teacher import register_teacher
from lfi.extract.vlm.capture import CAPTURE_ATTENTION, AttentionCapture, register_capture_attention
from lfi.extract.vlm.families import FAMILIES, Family, Layout, family_for
from lfi.extract.vlm.geometry import Part, draw_boxes, expand_to_square, place_parts, unpad_map
from lfi.extract.vlm.loader import DEFAULT_CHECKPOINT, load_llava, load_vlm
from lfi.extract.vlm.prompts import DEFAULT_BACKGROUND_WORDS, format_answer, task_prompt
from lfi.extract.vlm.teacher import LlavaTeacher, VLMTeacher, default_layers

__all__ = [
    "CAPTURE_ATTENTION",
    "DEFAULT_BACKGROUND_WORDS",
    "DEFAULT_CHECKPOINT",
    "FAMILIES",
    "AttentionCapture",
    "Family",
    "Layout",
    "LlavaTeacher",
    "Part",
    "VLMTeacher",
    "default_layers",
    "draw_boxes",
    "expand_to_square",
    "family_for",
    "format_answer",
    "load_llava",
    "load_vlm",
    "place_parts",
    "register_capture_attention",
    "task_prompt",
    "unpad_map",
]


@register_teacher("llava")
def _build(**kwargs: Any) -> LlavaTeacher:
    return LlavaTeacher.from_pretrained(**kwargs)


@register_teacher("hf")
def _build_hf(model: str | None = None, **kwargs: Any) -> VLMTeacher:
    """``model``: a hub id or a local folder of any family in `FAMILIES` (remote code only if asked)."""
    if not model:
        raise ValueError(
            "teacher 'hf' needs model=HUB_ID_OR_FOLDER (e.g. --teacher-arg model=Qwen/Qwen2-VL-2B-Instruct)"
        )
    return VLMTeacher.from_pretrained(model, **kwargs)
