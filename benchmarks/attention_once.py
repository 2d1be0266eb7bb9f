"""Run fused interaction attention forward+backward a fixed number of times, for an external kernel profiler.

Nsight Compute replays every kernel it profiles, so it wants a program that launches each kernel a known number
of times, not a timing loop. One call launches, in order: the row statistics (`_lse_kernel`), the forward, then the
backward's kernels (`_mix_gate_bwd_kernel`, `_mix_dkdv_kernel`, `_mix_dq_kernel`). The first call
compiles; profile from the second on:

    ncu --clock-control none -k regex:_mix_ --launch-skip 4 --launch-count 4 --set full -o $OUT/mix \\
        python3 benchmarks/attention_once.py --shape 256x6x197x64 --calls 2

Inputs as `attention_kernels.py` (random normal, gate weights std 0.5, bf16 by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_kernels import DTYPES, callables, make_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="256x6x197x64", help="BxHxNxd")
    p.add_argument("--hidden", type=int, default=8, help="gate hidden width E")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--calls", type=int, default=2, help="forward+backward calls (the first one compiles)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("attention_once.py profiles the CUDA kernels: no CUDA device found")
    shape = tuple(int(s) for s in args.shape.split("x"))
    inputs = make_inputs(shape, "mix", args.hidden, DTYPES[args.dtype], torch.device("cuda"))
    _, fwd_bwd = callables("fused", inputs)
    for _ in range(args.calls):
        fwd_bwd()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
