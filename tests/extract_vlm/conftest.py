"""Tiny VLMs of every family (random weights, 3 decoder layers) built offline, with the real processors.

LLaVA-1.5: CLIP 56 px / patch 14 -> 4x4 image tokens. The tokenizer is a small BPE trained here on a few
sentences, wrapped as a fast tokenizer with BOS added and llava-1.5-7b-hf's chat template; the image
processor is a CLIPImageProcessor built from its config.
LLaVA-NeXT, Qwen2-VL and Idefics3 (`FAMILY_BUILDERS`): their image processors with the real checkpoints'
settings (llava-v1.6: 336 px tiles, the five grid pinpoints; Qwen2-VL: patch 14, merge 2, min/max pixels
defaults; Idefics3: 1456 px longest edge, 364 px tiles + global image; PaliGemma: 224 px square),
tiny towers whose image features are local (LLaVA-NeXT: the CLIP embedding layer, vision_feature_layer=0;
Qwen2-VL: no vision blocks, only patch embedding + 2x2 merger; Idefics3: no encoder layers, only patch +
position embedding and the pixel-shuffle connector; PaliGemma: SigLIP embeddings only), so a change of pixels in a region changes
exactly the image tokens that see it: the geometry tests use that as the ground truth.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ImageProcessor,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ImageProcessor,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    SiglipImageProcessor,
    SmolVLMConfig,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
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


def build_tokenizer(extra: tuple[str, ...] = ("<image>",), add_bos: bool = True) -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<s>", "</s>", "<pad>", *extra]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=160, special_tokens=specials))
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_llama(tokenizer: PreTrainedTokenizerFast) -> dict:
    """Keywords of the tiny 3-layer decoder every family shares (GQA: 4 query heads, 2 KV heads)."""
    return dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


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
    text = LlamaConfig(**{**tiny_llama(tokenizer), "max_position_embeddings": 256})
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


# llava-hf/llava-v1.6-mistral-7b-hf's chat template, reduced to one image and text turns.
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% else %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{{ ' [/INST]' }}{% else %}"
    "{{ ' ' + message['content'][0]['text'] + '</s>' }}{% endif %}{% endfor %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat template (system turn, one image per user turn).
QWEN2_VL_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NEXT_PATCH = 42  # 336 px tiles / 42 = 8 x 8 tokens per tile (the real model: 14 -> 24 x 24)


def build_tiny_llava_next(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )  # llava-v1.6's preprocessor_config.json; pinpoints and CLIP mean/std are the class defaults
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=NEXT_PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        image_size=336, patch_size=NEXT_PATCH, hidden_size=32, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, projection_dim=32,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=LlamaConfig(**tiny_llama(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=0,
        image_grid_pinpoints=image_processor.image_grid_pinpoints,
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    return AutoModelForImageTextToText.from_config(config).eval(), processor


def build_tiny_qwen2_vl(
    attn_implementation: str, v2_5: bool = False
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen2-VL, or Qwen2.5-VL (window-attention tower: its patches are reordered by window and back)."""
    torch.manual_seed(0)
    pads = (
        "<|image_pad|>",
        "<|video_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|im_start|>",
        "<|im_end|>",
    )
    tokenizer = build_tokenizer(pads, add_bos=False)
    processor = (Qwen2_5_VLProcessor if v2_5 else Qwen2VLProcessor)(
        image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE,
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in pads}
    text = {**tiny_llama(tokenizer), "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}}
    vision = dict(depth=0, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2)
    config = (Qwen2_5_VLConfig if v2_5 else Qwen2VLConfig)(
        vision_config=vision if v2_5 else dict(depth=0, embed_dim=32, hidden_size=64, num_heads=2),
        text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    return AutoModelForImageTextToText.from_config(config).eval(), processor


def build_tiny_qwen2_5_vl(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    return build_tiny_qwen2_vl(attn_implementation, v2_5=True)


# HuggingFaceM4/Idefics3-8B-Llama3's chat template ("User:<image>prompt<end_of_utterance>\nAssistant: ...").
IDEFICS3_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_PATCH = (
    26  # 364 px frames / 26 = 14 patches, pixel shuffle 2 -> 7 x 7 tokens (the real model: 14 -> 13 x 13)
)


def build_tiny_idefics3(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    torch.manual_seed(0)
    tags = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer = build_tokenizer(
        ("<image>", "<fake_token_around_image>", "<end_of_utterance>", "<global-img>", *tags)
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(), tokenizer=tokenizer, image_seq_len=49,
        chat_template=IDEFICS3_TEMPLATE,
    )  # fmt: skip  # the image processor's defaults are Idefics3-8B's: 1456 px longest edge, 364 px tiles
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=0, num_attention_heads=2, image_size=364,
        patch_size=IDEFICS3_PATCH,
    )  # fmt: skip
    config = Idefics3Config(
        vision_config=vision, text_config=LlamaConfig(**tiny_llama(tokenizer)).to_dict(), scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    return AutoModelForImageTextToText.from_config(config).eval(), processor


# HuggingFaceTB/SmolVLM2's chat template (transformers' SmolVLM default), image turns only.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# 512 px frames / 32 = 16 patches, pixel shuffle 4 -> 4 x 4 tokens (the real model: 16 -> 8 x 8)
SMOLVLM_PATCH = 32


def build_tiny_smolvlm(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """SmolVLM2-256M/500M's image settings: 512 px tiles, 2048 px longest edge, mean/std 0.5, scale 4."""
    torch.manual_seed(0)
    tags = [f"<row_{i}_col_{j}>" for i in range(1, 5) for j in range(1, 5)]
    specials = ("<image>", "<fake_token_around_image>", "<end_of_utterance>", "<global-img>", "<|im_start|>")
    tokenizer = build_tokenizer((*specials, *tags))
    settings = dict(
        size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}, image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )  # fmt: skip
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**settings), video_processor=SmolVLMVideoProcessor(**settings),
        tokenizer=tokenizer, image_seq_len=16, chat_template=SMOLVLM_TEMPLATE,
    )  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=0, num_attention_heads=2, image_size=512,
        patch_size=SMOLVLM_PATCH,
    )  # fmt: skip
    config = SmolVLMConfig(
        vision_config=vision, text_config=LlamaConfig(**tiny_llama(tokenizer)).to_dict(), scale_factor=4,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    return AutoModelForImageTextToText.from_config(config).eval(), processor


def build_tiny_paligemma(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """google/paligemma-3b-pt-224's image settings (224 px square, mean/std 0.5), a Gemma 1 decoder."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(("<image>",), add_bos=False)  # the processor writes BOS after the image
    image_processor = SiglipImageProcessor(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = 64  # 224 / 28 = 8 x 8 tokens (the real model: 14 -> 16 x 16 = 256)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text = {**tiny_llama(tokenizer), "head_dim": 16}
    vision = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=0,
        num_attention_heads=2, image_size=224, patch_size=28, projection_dim=64,
    )  # fmt: skip
    config = PaliGemmaConfig(
        vision_config=vision, text_config=GemmaConfig(**text).to_dict(), projection_dim=64, hidden_size=64,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vocab_size=len(tokenizer),
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    return AutoModelForImageTextToText.from_config(config).eval(), processor


# google/gemma-3-4b-it's chat template, reduced to text and image items (no system turn).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}{% elif item['type'] == 'text' %}"
    "{{ item['text'] | trim }}{% endif %}{% endfor %}{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def build_tiny_gemma3(attn_implementation: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """gemma-3-4b's image settings (896 px square, mean/std 0.5, no pan-and-scan); 896 / 56 = 16 x 16
    patches pooled 2 x 2 -> 8 x 8 tokens (the real model: 64 x 64 pooled 4 x 4 -> 16 x 16); sliding and
    full attention layers as in Gemma 3."""
    torch.manual_seed(0)
    marks = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer = build_tokenizer((*marks.values(), "<start_of_turn>", "<end_of_turn>"), add_bos=False)
    tokenizer = PreTrainedTokenizerFast(  # the chat template writes BOS
        tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", extra_special_tokens=marks,
    )  # fmt: skip
    image_processor = Gemma3ImageProcessor(
        size={"height": 896, "width": 896}, image_mean=[0.5] * 3, image_std=[0.5] * 3, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=64,
        chat_template=GEMMA3_TEMPLATE,
    )
    # A window shorter than the sequences (the real 1024 is longer): the capture must take it from the mask.
    text = Gemma3TextConfig(
        **{**tiny_llama(tokenizer), "head_dim": 16},
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], sliding_window=24,
    )  # fmt: skip
    vision = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=0,
        num_attention_heads=2, image_size=896, patch_size=56,
    )  # fmt: skip
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in marks.items()}
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=64, boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"], image_token_index=ids["image_token"],
    )  # fmt: skip
    config._attn_implementation = attn_implementation
    model = AutoModelForImageTextToText.from_config(config).eval()
    # Gemma 3 initialises the image projection to zeros: every image would give the same tokens
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    return model, processor


FAMILY_BUILDERS = {
    "paligemma": build_tiny_paligemma,
    "gemma3": build_tiny_gemma3,
    "idefics3": build_tiny_idefics3,
    "smolvlm": build_tiny_smolvlm,
    "llava_next": build_tiny_llava_next,
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
}
#: Every family's tiny model, LLaVA-1.5 included (for what all of them must do, e.g. load from a folder).
ALL_BUILDERS = {"llava": build_tiny_llava, **FAMILY_BUILDERS}


@pytest.fixture(scope="module")
def build_family():
    """model_type -> builder(attn_implementation) of its tiny (model, processor), LLaVA-1.5 included."""
    return ALL_BUILDERS.__getitem__


@pytest.fixture(scope="module", params=sorted(FAMILY_BUILDERS))
def family_pair(request) -> tuple[PreTrainedModel, ProcessorMixin, PreTrainedModel]:
    """(model with "lfi_capture", processor, eager twin with the same weights), one per family."""
    build = FAMILY_BUILDERS[request.param]
    model, processor = build(register_capture_attention())
    eager, _ = build("eager")
    eager.load_state_dict(model.state_dict())
    return model, processor, eager


@pytest.fixture(scope="module", params=sorted(ALL_BUILDERS))
def saved_family(request, tmp_path_factory) -> tuple[str, str]:
    """(model_type, folder): a tiny model of each family and its processor saved with save_pretrained."""
    model, processor = ALL_BUILDERS[request.param](register_capture_attention())
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return request.param, str(folder)
