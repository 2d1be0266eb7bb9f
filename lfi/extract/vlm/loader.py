"""Load a VLM checkpoint of a known family (`families.FAMILIES`) and its processor for extraction."""

from __future__ import annotations

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
    PreTrainedModel,
    ProcessorMixin,
)

from lfi.extract.vlm.capture import register_capture_attention
from lfi.extract.vlm.families import family_for

DEFAULT_CHECKPOINT = "llava-hf/llava-1.5-7b-hf"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_vlm(
    checkpoint: str,
    revision: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Any supported family's model (eval mode, attention "lfi_capture") and processor, hub id or local folder.

    The family comes from the checkpoint's config (``model_type``); an unsupported one is refused before the
    weights load. dtype / device / trust_remote_code as in `load_llava`.
    """
    config = AutoConfig.from_pretrained(checkpoint, revision=revision, trust_remote_code=trust_remote_code)
    family_for(config)
    return _load(AutoModelForImageTextToText, checkpoint, revision, dtype, device, trust_remote_code)


def load_llava(
    checkpoint: str = DEFAULT_CHECKPOINT,
    revision: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """Model (eval mode, attention "lfi_capture") and processor from a hub id or a local folder.

    dtype: default bfloat16 on CUDA, float32 elsewhere (CPU bf16 matmuls are slow and only tests run there).
    revision: a branch, tag or commit of the hub repository (recorded by the teacher's metadata).
    trust_remote_code stays off unless the user asks: LLaVA-family models ship with transformers.
    """
    return _load(LlavaForConditionalGeneration, checkpoint, revision, dtype, device, trust_remote_code)


def _load(
    model_class: type,
    checkpoint: str,
    revision: str | None,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
    trust_remote_code: bool,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    device = torch.device(device) if device is not None else default_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    processor = AutoProcessor.from_pretrained(
        checkpoint, revision=revision, trust_remote_code=trust_remote_code
    )
    model = model_class.from_pretrained(
        checkpoint,
        revision=revision,
        dtype=dtype,
        attn_implementation=register_capture_attention(),
        trust_remote_code=trust_remote_code,
    )
    return model.to(device).eval(), processor
