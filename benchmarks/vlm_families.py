"""Extraction throughput per VLM family: lfi's capture forward vs the naive ``output_attentions=True`` path.

Each family at a real 2-8B architecture (random weights, built on the device in bf16; no download), fed by its
real image processor on 640 x 480 images (the token count follows the family's own layout: LLaVA-1.5 576,
LLaVA-NeXT 2340 with tiles + base + newlines, Qwen2-VL 391 merged tokens, Idefics3 2197 = 12 tiles + global
image, SmolVLM2 1053 = 12 tiles + global image of 81 tokens; their per-tile marker tokens are left out;
PaliGemma 256, Gemma 3 256 pooled tokens), a LLaVA-1.5 sized prompt and answer.
Paths (as in `vlm_extraction.py`):

- lfi: "lfi_capture" attention, fore + back rows of the default layer (14/32 depth) in one forward, later
  layers cut; batch --batch;
- naive: eager attention + output_attentions=True, one forward per prompt (fore, then back), every layer's
  (B, H, T, T) weights materialised; batch --naive-batch, default the largest (up to --batch) whose attention
  weights (L * H * T^2 * 2 bytes an image: ~11 GiB for LLaVA-NeXT's 2387 tokens) fill at most half of the
  GPU memory left beside the weights.

Writes JSON (device, date, versions, command, img/s and peak memory per family and path, ratios) to --out.
Usage (PYTHONPATH=. from the repository root):
    python benchmarks/vlm_families.py --out benchmarks/results/vlm_families_h100.json
    python benchmarks/vlm_families.py --tiny --device cpu --out /tmp/f.json   # small models, CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ImageProcessor,
    Gemma3TextConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ImageProcessor,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextImageProcessor,
    MistralConfig,
    PaliGemmaConfig,
    PretrainedConfig,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    SiglipImageProcessor,
    SmolVLMConfig,
    SmolVLMImageProcessor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vlm_extraction import ANSWER_TOKENS, PROMPT_TOKENS, timed  # noqa: E402

from lfi.extract.vlm.capture import AttentionCapture, layers_up_to, register_capture_attention  # noqa: E402
from lfi.extract.vlm.families import family_for  # noqa: E402
from lfi.extract.vlm.teacher import default_layers  # noqa: E402
from lfi.extract.vlm.tokens import image_columns, pad_rows  # noqa: E402

IMAGE_TOKEN_ID = 32000  # LLaVA's <image>; Qwen2-VL's <|image_pad|> is 151655
IMAGE_HW = (480, 640)
FAMILIES = ("llava_next", "qwen2_vl", "idefics3", "llava", "paligemma", "smolvlm", "gemma3")
MODELS = {
    "llava": "LLaVA-1.5-7B (CLIP ViT-L/14-336 + Llama-2-7B)",
    "llava_next": "LLaVA-v1.6-Mistral-7B (CLIP ViT-L/14-336 any-res + Mistral-7B)",
    "qwen2_vl": "Qwen2-VL-7B (675M ViT, 2x2 merge + Qwen2-7B)",
    "idefics3": "Idefics3-8B-Llama3 (SigLIP-so400m/14-364 tiles, pixel shuffle 2 + Llama-3-8B)",
    "paligemma": "PaliGemma-3B-224 (SigLIP-so400m/14-224 + Gemma-2B)",
    "smolvlm": "SmolVLM2-2.2B (SigLIP-so400m/14-384 tiles, pixel shuffle 3 + SmolLM2-1.7B)",
    "gemma3": "Gemma-3-4B (SigLIP-so400m/14-896, 4x4 average pool + Gemma-3 4B text)",
}


def _clip(tiny: bool) -> CLIPVisionConfig:
    if tiny:
        return CLIPVisionConfig(
            image_size=336, patch_size=42, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
        )  # fmt: skip
    return CLIPVisionConfig(
        image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip


def _tiny_text() -> dict:
    return dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=IMAGE_TOKEN_ID + 64, max_position_embeddings=4096,
    )  # fmt: skip


def build_config(family: str, tiny: bool) -> PretrainedConfig:
    """The family's 7B architecture (the hub checkpoints' config.json values), or a tiny one for CPU."""
    if family == "llava":
        text = _tiny_text() if tiny else dict(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
        )  # fmt: skip
        return LlavaConfig(
            vision_config=_clip(tiny), text_config=LlamaConfig(**text), image_token_id=IMAGE_TOKEN_ID,
            vision_feature_layer=-2, vision_feature_select_strategy="default",
        )  # fmt: skip
    if family == "llava_next":
        text = _tiny_text() if tiny else dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=32064, max_position_embeddings=32768, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        )  # fmt: skip
        return LlavaNextConfig(
            vision_config=_clip(tiny), text_config=MistralConfig(**text), image_token_id=IMAGE_TOKEN_ID,
            vision_feature_layer=-2, vision_feature_select_strategy="default",
        )  # fmt: skip
    if family == "qwen2_vl":
        if tiny:
            vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2)
            text = {**_tiny_text(), "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}}
        else:
            vision = dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)
            text = dict(
                hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
            )  # fmt: skip
        return Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID)
    if family == "paligemma":
        vision = dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, image_size=224, patch_size=28, projection_dim=64,
        ) if tiny else dict(
            model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
            num_attention_heads=16, image_size=224, patch_size=14, projection_dim=2048,
        )  # fmt: skip
        text = {**_tiny_text(), "head_dim": 16} if tiny else dict(
            hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
            num_key_value_heads=1, head_dim=256, vocab_size=257216, max_position_embeddings=8192,
        )  # fmt: skip
        width = text["hidden_size"]
        return PaliGemmaConfig(
            vision_config=vision, text_config=GemmaConfig(**text).to_dict(), projection_dim=width,
            hidden_size=width, image_token_index=IMAGE_TOKEN_ID, vocab_size=text["vocab_size"],
        )  # fmt: skip
    if family == "idefics3":
        vision = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=364,
            patch_size=26,
        ) if tiny else dict(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=364, patch_size=14,
        )  # fmt: skip
        text = _tiny_text() if tiny else dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128259, max_position_embeddings=8192, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        )  # fmt: skip
        return Idefics3Config(
            vision_config=vision, text_config=LlamaConfig(**text).to_dict(), scale_factor=2,
            image_token_id=IMAGE_TOKEN_ID,
        )  # fmt: skip
    if family == "smolvlm":
        vision = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=384,
            patch_size=32,
        ) if tiny else dict(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=384, patch_size=14,
        )  # fmt: skip
        text = _tiny_text() if tiny else dict(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=49280, max_position_embeddings=8192, rms_norm_eps=1e-5,
        )  # fmt: skip
        return SmolVLMConfig(
            vision_config=vision, text_config=LlamaConfig(**text).to_dict(), scale_factor=3,
            image_token_id=IMAGE_TOKEN_ID,
        )  # fmt: skip
    if family == "gemma3":
        vision = dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, image_size=896, patch_size=56,
        ) if tiny else dict(
            model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
            num_attention_heads=16, image_size=896, patch_size=14, vision_use_head=False,
        )  # fmt: skip
        text = {**_tiny_text(), "head_dim": 16} if tiny else dict(
            hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
            num_key_value_heads=4, head_dim=256, vocab_size=262208, sliding_window=1024,
            max_position_embeddings=131072,
        )  # fmt: skip
        return Gemma3Config(
            vision_config=vision, text_config=Gemma3TextConfig(**text), mm_tokens_per_image=64 if tiny else 256,
            image_token_index=IMAGE_TOKEN_ID, boi_token_index=IMAGE_TOKEN_ID + 1,
            eoi_token_index=IMAGE_TOKEN_ID + 2,
        )  # fmt: skip
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def image_processor(family: str, tiny: bool):  # noqa: ANN201
    """The family's image processor with the hub checkpoints' settings (tiny: LLaVA tiles of 42 px patches)."""
    if family == "llava":
        return CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    if family == "llava_next":
        return LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    if family == "idefics3":
        return Idefics3ImageProcessor()
    if family == "smolvlm":  # SmolVLM2-2.2B: 384 px tiles, 1536 px longest edge
        return SmolVLMImageProcessor(size={"longest_edge": 1536}, max_image_size={"longest_edge": 384})
    if family == "gemma3":
        return Gemma3ImageProcessor(
            size={"height": 896, "width": 896},
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
            do_pan_and_scan=False,
        )
    if family == "paligemma":
        processor = SiglipImageProcessor(
            size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        processor.image_seq_length = 64 if tiny else 256
        return processor
    return Qwen2VLImageProcessor()


def build_inputs(family: str, config: PretrainedConfig, tiny: bool, batch: int, seed: int = 0):  # noqa: ANN201
    """Model inputs for `batch` random 640 x 480 images, the answer rows and the image-token columns."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8) for _ in range(batch)]
    if family == "llava":  # LLaVA-1.5 sees the padded square
        side = max(IMAGE_HW)
        images = [np.pad(im, ((0, side - IMAGE_HW[0]), (0, 0), (0, 0))) for im in images]
    processor = image_processor(family, tiny)
    kind = family_for(config)
    if kind.nested_images:  # a list per sequence (else the images are one sequence's)
        images = [[im] for im in images]
    enc = {k: v for k, v in processor(images=images, return_tensors="pt").items() if k in kind.input_names}
    n = kind.layout(config, SimpleNamespace(image_processor=processor), enc, 0, IMAGE_HW).n_tokens
    before, after = PROMPT_TOKENS
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 1000, (batch, before + after + ANSWER_TOKENS), generator=g)
    image = torch.full((batch, n), config.image_token_id)
    enc["input_ids"] = torch.cat([text[:, :before], image, text[:, before:]], dim=1)
    if family == "gemma3":  # the image tokens attend to each other bidirectionally
        enc["token_type_ids"] = (enc["input_ids"] == config.image_token_id).long()
    elif "token_type_ids" in kind.input_names:  # PaliGemma: the answer is the causal suffix
        start = before + n + after
        enc["token_type_ids"] = (torch.arange(enc["input_ids"].shape[1]) >= start).long().expand(batch, -1)
    if "mm_token_type_ids" in kind.optional_inputs:
        enc["mm_token_type_ids"] = (enc["input_ids"] == config.image_token_id).long()
    start = before + n + after
    rows = pad_rows([[start + 4, start + 5, *range(start + 12, start + ANSWER_TOKENS - 2)]] * batch)
    columns, _ = image_columns(enc["input_ids"], config.image_token_id)
    return enc, rows, columns


def naive_batch(model: torch.nn.Module, tokens: int, batch: int, device: torch.device) -> int:
    """The largest batch <= `batch` whose kept attention weights (sequences of `tokens`) take at most half
    the free GPU memory."""
    if device.type != "cuda":
        return batch
    text = model.config.text_config
    per_image = text.num_hidden_layers * text.num_attention_heads * tokens**2 * 2
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(batch, int(0.5 * free // per_image)))


def bench_family(family: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    config = build_config(family, args.tiny)
    config._attn_implementation = register_capture_attention()
    torch.manual_seed(0)
    with device:  # parameters created (and randomly initialised) on the device
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
    layer = default_layers(config.text_config.num_hidden_layers)[0]
    capture = AttentionCapture(model, layers=(layer,))

    def inputs(batch: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        enc, rows, cols = build_inputs(family, config, args.tiny, batch)
        return (
            {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in enc.items()},
            rows,
            cols,
        )

    def lfi(enc: dict, rows: torch.Tensor, cols: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), capture.capturing(rows, cols) as got, layers_up_to(model, layer):
                model.model(**enc, use_cache=False)
            got[layer].mean(dim=1).float().cpu()  # the maps leave the device, as in extraction

        return run

    def naive(enc: dict, rows: torch.Tensor, cols: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            for part in (rows[:, :2], rows[:, 2:]):  # one forward per prompt: fore, then back
                with torch.inference_mode():
                    out = model.model(**enc, use_cache=False, output_attentions=True)
                att = out.attentions[layer]
                picked = att[torch.arange(att.shape[0])[:, None], :, part.to(device)]  # (B, R, H, T)
                picked[..., cols[0].to(device)].mean(dim=2).float().cpu()
                del out, att

        return run

    results = {}
    tokens = inputs(1)[0]["input_ids"].shape[1]
    for name, implementation, make, batch in (
        ("lfi", config._attn_implementation, lfi, args.batch),
        ("naive", "eager", naive, args.naive_batch or naive_batch(model, tokens, args.batch, device)),
    ):
        model.set_attn_implementation(implementation)
        enc, rows, cols = inputs(batch)
        sizes = {"sequence_length": enc["input_ids"].shape[1], "image_tokens": cols.shape[1]}
        seconds, peak = timed(make(enc, rows, cols), device, args.warmup, args.iters)
        results[name] = {
            "attn_implementation": implementation, "batch": batch, "seconds_per_batch": seconds,
            "images_per_s": batch / seconds, "peak_memory_gib": peak,
        }  # fmt: skip
        print(f"{family:>10} {name:>6}: {batch / seconds:8.2f} img/s  peak {peak} GiB", flush=True)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    return {
        "model": ("tiny " + family) if args.tiny else MODELS[family] + ", random weights",
        "weights_gib": weights_gib, "captured_layer": layer, **sizes, "paths": results,
        "lfi_vs_naive_throughput": results["lfi"]["images_per_s"] / results["naive"]["images_per_s"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--batch", type=int, default=8, help="images per lfi forward")
    parser.add_argument("--naive-batch", type=int, help="images per naive forward (default: what fits)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report = {
        "benchmark": "lfi VLM extraction forward per family vs output_attentions=True (issue 30)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "dtype": str(dtype).removeprefix("torch."),
        "image_hw": list(IMAGE_HW), "warmup": args.warmup, "iters": args.iters, "families": {},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        report["families"][family] = bench_family(family, args, device, dtype)
        gc.collect()  # the family's model is unreferenced now: free its memory before the next one
        if device.type == "cuda":
            torch.cuda.empty_cache()
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # each family kept even if a later one fails
    return report


if __name__ == "__main__":
    main()
