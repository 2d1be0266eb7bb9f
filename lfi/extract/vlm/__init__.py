"""The VLM teacher (LLaVA family, transformers): paper Sec. 4.2, Eq. 10-12.

`LlavaTeacher` turns images (+ class names, or boxes for dense tasks) into C_fore / C_back maps from the
attention of the teacher-forced answer words to the image tokens, captured on the fly by the "lfi_capture"
attention function (`capture`). Registered as teacher "llava": ``build_teacher("llava", checkpoint=...)``.
"""

from __future__ import annotations

from typing import Any

from lfi.extract.teacher import register_teacher
from lfi.extract.vlm.capture import CAPTURE_ATTENTION, AttentionCapture, register_capture_attention
from lfi.extract.vlm.geometry import draw_boxes, expand_to_square, unpad_map
from lfi.extract.vlm.loader import DEFAULT_CHECKPOINT, load_llava
from lfi.extract.vlm.prompts import DEFAULT_BACKGROUND_WORDS, format_answer, task_prompt
from lfi.extract.vlm.teacher import LlavaTeacher, default_layers

__all__ = [
    "CAPTURE_ATTENTION",
    "DEFAULT_BACKGROUND_WORDS",
    "DEFAULT_CHECKPOINT",
    "AttentionCapture",
    "LlavaTeacher",
    "default_layers",
    "draw_boxes",
    "expand_to_square",
    "format_answer",
    "load_llava",
    "register_capture_attention",
    "task_prompt",
    "unpad_map",
]


@register_teacher("llava")
def _build(**kwargs: Any) -> LlavaTeacher:
    return LlavaTeacher.from_pretrained(**kwargs)
