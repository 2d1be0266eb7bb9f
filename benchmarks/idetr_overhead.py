"""Parameter and forward-FLOP overhead of I-DETR over DETR-R50 / Conditional DETR-R50 (paper Sec. 5.3).

The paper reports +0.4M parameters on 41.5M and < 1% FLOPs. Models are built from HF configs with random
weights (same shapes and FLOPs as the published checkpoints); FLOPs are counted by torch's FlopCounterMode
(matrix multiplies and convolutions; attention in eager mode so that it is counted) for one image
at --size, on the CPU.

    python benchmarks/idetr_overhead.py --out benchmarks/results/idetr_overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lfi.models.detr import build_detr  # noqa: E402
from lfi.models.idetr import interactionize_detr  # noqa: E402


def count(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[int, int]:
    """(parameters, forward FLOPs for `pixels`)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(
            pixel_values=pixels, pixel_mask=torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long)
        )
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, *args.size)
    rows = []
    for arch in ("detr", "conditional_detr"):
        plain = build_detr("detection", arch, num_labels=91, size="r50")
        # FlopCounterMode has no formula for the CPU SDPA kernel: eager attention makes the plain model's
        # attention matmuls count, as the interaction attention's do.
        plain.set_attn_implementation("eager")
        params, flops = count(plain, pixels)
        iparams, iflops = count(interactionize_detr(plain), pixels)
        rows.append({
            "arch": arch, "params_M": params / 1e6, "idetr_params_M": iparams / 1e6,
            "extra_params_M": (iparams - params) / 1e6, "GFLOPs": flops / 1e9, "idetr_GFLOPs": iflops / 1e9,
            "flop_overhead_pct": 100 * (iflops - flops) / flops,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "I-DETR parameter and FLOP overhead (issue 5)",
        "paper": "+0.4M parameters on 41.5M, < 1% FLOPs",
        "image_size": list(args.size),
        "device": "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
