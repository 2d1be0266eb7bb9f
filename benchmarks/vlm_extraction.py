"""Benchmark lfi's VLM extraction forward against the naive path and a bare SDPA forward (issue 3, Sec. 5).

LLaVA-1.5-7B architecture (CLIP ViT-L/14-336 + Llama-2-7B) with random weights, built from a config directly
on the device in bf16; 336 px images (576 image tokens) and a LLaVA-1.5 sized prompt (~620 tokens). Paths:

- lfi: "lfi_capture" attention, fore + back rows of one layer from one forward, later layers cut;
- lfi_all_layers: the same without cutting (what the capture itself costs over the bare forward);
- naive: eager attention + output_attentions=True, one forward per prompt (fore, then back);
- bare: the same model and batch with SDPA and no capture.

Writes JSON (device, date, versions, command, img/s and peak memory per path, ratios, targets) to --out.
Usage (lfi installed, or PYTHONPATH=. from the repository root):
    python benchmarks/vlm_extraction.py --out bench.json [--batch 8]   # --tiny: small model, runs on CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from lfi.extract.vlm.capture import AttentionCapture, layers_up_to, register_capture_attention
from lfi.extract.vlm.tokens import pad_rows

IMAGE_TOKEN_ID = 32000
PROMPT_TOKENS = (5, 12)  # text tokens before / after the image: "USER: <image>\nClassify ... ASSISTANT:"
ANSWER_TOKENS = 30  # "{foreground: [class], background: [sky, ground, wall, grass, water]}"


def build_config(tiny: bool) -> LlavaConfig:
    """LLaVA-1.5-7B's dimensions (llava-hf/llava-1.5-7b-hf), or a tiny model for CPU smoke runs."""
    if tiny:
        vision = CLIPVisionConfig(
            image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
        )  # fmt: skip
        text = LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=IMAGE_TOKEN_ID + 64, max_position_embeddings=512,
        )  # fmt: skip
    else:
        vision = CLIPVisionConfig(
            image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu",
        )  # fmt: skip
        text = LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
        )  # fmt: skip
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def build_inputs(config: LlavaConfig, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """input_ids (B, T) with the image tokens after a short prompt, pixel_values, and the capture positions."""
    g = torch.Generator().manual_seed(seed)
    side = config.vision_config.image_size // config.vision_config.patch_size
    n_image = side * side
    before, after = PROMPT_TOKENS
    n_text = before + after + ANSWER_TOKENS
    text = torch.randint(3, IMAGE_TOKEN_ID, (batch, n_text), generator=g)
    image = torch.full((batch, n_image), IMAGE_TOKEN_ID)
    ids = torch.cat([text[:, :before], image, text[:, before:]], dim=1)
    pixels = torch.randn(
        batch, 3, config.vision_config.image_size, config.vision_config.image_size, generator=g
    )
    answer_start = before + n_image + after
    fore = [answer_start + 4, answer_start + 5]  # the class name's tokens
    back = list(range(answer_start + 12, answer_start + ANSWER_TOKENS - 2))  # the background words
    rows = pad_rows([fore + back] * batch)
    columns = torch.arange(before, before + n_image).expand(batch, -1)
    return ids.to(device), pixels.to(device, dtype), rows, columns


def timed(
    fn: Callable[[], None], device: torch.device, warmup: int, iters: int
) -> tuple[float, float | None]:
    """Median seconds per call and peak allocated GiB (CUDA only; None elsewhere)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layer", type=int, default=None, help="captured layer (default: 14 of 32)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = build_config(args.tiny)
    config._attn_implementation = register_capture_attention()
    torch.manual_seed(0)
    with device:  # parameters are created (and randomly initialised) on the device: no CPU init
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    n_layers = config.text_config.num_hidden_layers
    layer = args.layer if args.layer is not None else n_layers * 14 // 32
    ids, pixels, rows, columns = build_inputs(config, args.batch, device, dtype)
    capture = AttentionCapture(model, layers=(layer,))
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30

    def lfi(cut: bool) -> Callable[[], None]:
        def run() -> None:
            context = layers_up_to(model, layer) if cut else nullcontext()
            with torch.inference_mode(), capture.capturing(rows, columns) as got, context:
                model.model(input_ids=ids, pixel_values=pixels, use_cache=False)
            got[layer].mean(dim=1).float().cpu()  # the maps leave the device, as in extraction

        return run

    def naive() -> None:
        # One forward per prompt (fore, then back), every layer's (B, H, T, T) weights materialised.
        for part in (rows[:, :2], rows[:, 2:]):
            with torch.inference_mode():
                out = model.model(input_ids=ids, pixel_values=pixels, use_cache=False, output_attentions=True)
            att = out.attentions[layer]
            picked = att[torch.arange(ids.shape[0])[:, None], :, part.to(device)]  # (B, R, H, T)
            picked[..., columns[0].to(device)].mean(dim=2).float().cpu()

    def bare() -> None:
        with torch.inference_mode():
            model.model(input_ids=ids, pixel_values=pixels, use_cache=False)

    results = {}
    for name, implementation, fn in (
        ("lfi", config._attn_implementation, lfi(cut=True)),
        ("lfi_all_layers", config._attn_implementation, lfi(cut=False)),
        ("naive", "eager", naive),
        ("bare", "sdpa", bare),
    ):
        model.set_attn_implementation(implementation)
        seconds, peak = timed(fn, device, args.warmup, args.iters)
        results[name] = {
            "attn_implementation": implementation,
            "seconds_per_batch": seconds,
            "images_per_s": args.batch / seconds,
            "peak_memory_gib": peak,
        }
        print(
            f"{name:>15}: {args.batch / seconds:8.2f} img/s  peak {peak if peak is None else round(peak, 2)} GiB"
        )

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = results[a][key], results[b][key]
        return None if x is None or y is None else x / y

    ratios = {
        "lfi_vs_naive_throughput": ratio("lfi", "naive", "images_per_s"),
        "lfi_vs_bare_time": ratio("lfi", "bare", "seconds_per_batch"),
        "lfi_all_layers_vs_bare_time": ratio("lfi_all_layers", "bare", "seconds_per_batch"),
        "lfi_vs_bare_memory": ratio("lfi", "bare", "peak_memory_gib"),
        "lfi_all_layers_vs_bare_memory": ratio("lfi_all_layers", "bare", "peak_memory_gib"),
    }
    report = {
        "benchmark": "lfi VLM extraction forward (issue 3, section 5)",
        "model": "tiny LLaVA (smoke test)" if args.tiny else "LLaVA-1.5-7B architecture, random weights",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dtype": str(dtype).removeprefix("torch."),
        "batch": args.batch,
        "sequence_length": ids.shape[1],
        "image_tokens": columns.shape[1],
        "captured_layer": layer,
        "captured_rows": rows.shape[1],
        "weights_gib": weights_gib,
        "warmup": args.warmup,
        "iters": args.iters,
        "paths": results,
        "ratios": ratios,
        "targets": {
            "lfi_vs_naive_throughput": ">= 2.5",
            "lfi_all_layers_vs_bare_time": "<= 1.1",
            "lfi_all_layers_vs_bare_memory": "<= 1.05",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
