"""The benchmark script runs end to end on the tiny model (CPU) and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm_extraction.py"


def test_tiny_benchmark_writes_json(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vlm_extraction", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(
        ["--tiny", "--out", str(out), "--batch", "2", "--warmup", "0", "--iters", "1", "--device", "cpu"]
    )
    report = json.loads(out.read_text())
    assert set(report["paths"]) == {"lfi", "lfi_all_layers", "naive", "bare"}
    assert all(p["images_per_s"] > 0 for p in report["paths"].values())
    assert report["ratios"]["lfi_vs_naive_throughput"] > 0
    assert {"device", "date", "torch", "transformers", "command"} <= set(report)


@pytest.mark.slow
def test_tiny_family_benchmark_writes_json(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vlm_families", SCRIPT.parent / "vlm_families.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "families.json"
    argv = ["--tiny", "--out", str(out), "--batch", "1", "--warmup", "0", "--iters", "1", "--device", "cpu"]
    bench.main(argv)
    report = json.loads(out.read_text())
    families = {"llava", "llava_next", "qwen2_vl", "idefics3", "paligemma", "smolvlm", "gemma3"}
    assert set(report["families"]) == families
    tokens = {f: r["image_tokens"] for f, r in report["families"].items()}
    # 480 x 640 images: 8 x 8 tiles; 12 x 16 unpadded + newlines; 34 x 46 patches merged; 3 x 4 tiles + global
    # (Idefics3: 7 x 7 tokens a frame, SmolVLM: 4 x 4); 8 x 8 squares (PaliGemma, Gemma 3 pooled)
    expected = {
        "llava": 64,
        "llava_next": 64 + 12 * 17,
        "qwen2_vl": 17 * 23,
        "idefics3": 13 * 49,
        "paligemma": 64,
        "smolvlm": 13 * 16,
        "gemma3": 64,
    }
    assert tokens == expected
    assert all(r["paths"]["naive"]["images_per_s"] > 0 for r in report["families"].values())
    assert {"device", "date", "torch", "transformers", "command"} <= set(report)
