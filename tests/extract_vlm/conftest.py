"""A tiny LLaVA (random weights, CLIP 56 px / patch 14 -> 4x4 image tokens, 3 Llama layers) built offline.

The tokenizer is a small BPE trained here on a few sentences, wrapped as a fast tokenizer with BOS added
and llava-1.5-7b-hf's chat template; the image processor is a CLIPImageProcessor built from its config.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from lfi.extract.vlm import register_capture_attention

# The chat template of llava-hf/llava-1.5-7b-hf (images first, then text, each turn "ROLE: ...").
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
CORPUS = [
    "USER: Classify foreground vs. background ASSISTANT: {foreground: [cat], background: [sky, ground, wall]}",
    "Locate all dog and person instances {objects: [dog, person, dog], background: [grass, water, road]}",
    "golden retriever tabby cat red fox tree cloud",
]
SIDE, PATCH = 56, 14


def build_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=160, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def build_tiny_llava(attn_implementation: str) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        chat_template=LLAVA_15_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        image_size=SIDE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = attn_implementation
    model = LlavaForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def tiny_llava() -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """(model with attention "lfi_capture", processor)."""
    return build_tiny_llava(register_capture_attention())


@pytest.fixture(scope="module")
def eager_twin(tiny_llava) -> LlavaForConditionalGeneration:
    """The same weights with eager attention (output_attentions=True: the reference, tests only)."""
    eager, _ = build_tiny_llava("eager")
    eager.load_state_dict(tiny_llava[0].state_dict())
    return eager
