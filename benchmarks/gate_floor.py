"""A floor under the head-mixing gate's cost: its FFN alone, over every query-key pair of a layer, on one GPU.

The gate of Eq. 5 runs at each of the B x N x N pairs of a layer. Whatever the attention kernel around it, the
gate's own arithmetic has to happen at least twice: its forward for C_F, and its backward, with the weight
gradients, for dP. (A backward also needs dP a second time, since the softmax gradient dS = P (dP - D) needs
D = rowsum(P dP) over all keys first; the fused kernels store dP (and C_F) of every pair, 3H values, which is
cheaper than a second full backward and is left out here.) So floor = forward + backward with
weight gradients; the backward without them is timed too, to show what the weight gradients cost.

This script times exactly that arithmetic with nothing around it: no attention products, no softmax, no loads or
stores of pairs (the gate's input is made in registers), in the channel layout and with the same code as the
fused kernels (`lfi.models.kernels._mix._gate`: two small matrix products on the matrix units, erf GELU on the real
hidden units, sigmoid). Each mode runs over all pairs of the shape; the fastest of a few tile configurations
counts. These times are what a gated kernel in this formulation would spend if everything else it does were free,
i.e. a floor, not an estimate.

Beside it, what every attention layer of this shape costs without any gate: two softmax attentions (the
layer's two query sets over the same keys and values), forward and backward, as cuDNN's fused SDPA computes them
(`attention_ms`). A gated layer does all of that work and the gate's: `layer_floor_ms` = attention_ms +
floor_ms_per_layer is what the fastest kernels imaginable in this formulation would need per layer, the figure
to hold against a step's budget.

    python benchmarks/gate_floor.py --out $OUT/gate_floor.json            # ViT-S/16 and ViT-B/16 layers, batch 256
    python benchmarks/gate_floor.py --shapes 256x6x197 --configs 256,8     # one shape, one tile
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
import triton.testing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attention_kernels import environment  # noqa: E402  (benchmarks/, this script's folder)

from lfi.models.kernels._mix import _gate, _gate_weights  # noqa: E402
from lfi.models.kernels.fused import _mix_meta, _mix_weights  # noqa: E402

MODES = {"forward": 0, "backward": 1, "backward_weight_grads": 2}
ITERS = 32  # pair tiles per program: enough work per program that its set-up is negligible


@triton.jit
def _gate_floor_kernel(
    W1T, B1, W2T, B2, OUT, C, ITERS: tl.constexpr, MODE: tl.constexpr, HP: tl.constexpr, EP: tl.constexpr,
    ES: tl.constexpr, BP: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """ITERS tiles of BP pairs: the gate's forward (MODE 0), its backward to dP (1), and with the weight gradients
    (2), exactly as `_mix_gate_bwd_kernel` computes them. C = 2H real channels; the padded ones hold zeros, as
    padded heads do there. One float per program goes out, so that no work can be dropped: the sum of the
    per-pair terms plus the weight gradients weighted by their position (a misplaced entry changes it)."""
    pid = tl.program_id(0)
    w1t, b1, w2t, b2 = _gate_weights(W1T, B1, W2T, B2, HP, EP)
    w1, w2 = tl.trans(w1t), tl.trans(w2t)
    offs_p = tl.arange(0, BP)
    offs_c = tl.arange(0, 2 * HP)
    seed = (pid * BP + offs_p[:, None]) * (2 * HP) + offs_c[None, :]
    x0 = ((seed * 40503) & 2047).to(tl.float32) * (1.0 / 1024.0)  # N P: around 1, in [0, 2)
    real = offs_c[None, :] < C
    x0 = tl.where(real, x0, 0.0)
    step = tl.where(real, 1e-3, 0.0)  # every iteration sees new inputs, padded channels stay zero
    acc = tl.zeros([BP, 2 * HP], tl.float32)
    dw1t = tl.zeros([2 * HP, EP], tl.float32)
    dw2t = tl.zeros([EP, 2 * HP], tl.float32)
    for it in range(ITERS):
        x = x0 + it * step
        z, dz, g = _gate(x, w1t, b1, w2t, b2, PREC, ES)
        if MODE == 0:
            acc += g * x  # C_F's terms g_c P_c
        else:
            dcf = x  # stands in for dO V^T, a matrix product outside the gate
            dt = dcf * x * g * (1.0 - g)
            du = tl.dot(dt, w2, input_precision=PREC) * dz
            dp = dcf * g + tl.dot(du, w1, input_precision=PREC)
            acc += x * dp  # D's terms P dP
            if MODE == 2:
                dw1t += tl.dot(tl.trans(x), du, input_precision=PREC)
                dw2t += tl.dot(tl.trans(z), dt, input_precision=PREC)
    offs_e = tl.arange(0, EP)
    tag1 = (offs_c[:, None] * EP + offs_e[None, :] + 1).to(tl.float32)
    tag2 = (offs_e[:, None] * (2 * HP) + offs_c[None, :] + 1).to(tl.float32)
    total = tl.sum(tl.sum(acc, 1), 0) + tl.sum(tl.sum(dw1t * tag1, 1), 0) + tl.sum(tl.sum(dw2t * tag2, 1), 0)
    tl.store(OUT + pid, total)


def time_mode(pairs: int, heads: int, hidden: int, mode: str, bp: int, warps: int) -> float:
    """Median ms of one mode over `pairs` pairs (rounded up to whole programs), random gate weights."""
    g = torch.Generator(device="cuda").manual_seed(0)
    w1, b1, w2, b2 = (
        torch.randn(*s, generator=g, device="cuda") * 0.5
        for s in ((hidden, 2 * heads), (hidden,), (2 * heads, hidden), (2 * heads,))
    )
    # key count 1: the floor kernel makes the gate's input N P itself; W1T (1, 2HP, EP) is one (2HP, EP) matrix
    weights = _mix_weights(w1, b1, w2, b2, heads, keys=torch.ones(1, device="cuda"))
    hp, ep, es = _mix_meta(heads, hidden)
    programs = triton.cdiv(pairs, bp * ITERS)
    out = torch.empty(programs, device="cuda")

    def run() -> None:
        _gate_floor_kernel[(programs,)](
            *weights,
            out,
            2 * heads,
            ITERS=ITERS,
            MODE=MODES[mode],
            HP=hp,
            EP=ep,
            ES=es,
            BP=bp,
            PREC="tf32",  # the kernels' precision for bf16 / fp16 inputs
            num_warps=warps,
        )

    return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")


def time_attention(batch: int, heads: int, tokens: int, head_dim: int) -> float:
    """Median ms of two SDPA attentions (q and q_int over the same k, v), forward + backward, bf16, with
    gradients for every input: the ungated layer's attention (the cuDNN kernels where torch picks them)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, qi, k, v = (
        torch.randn(
            batch, heads, tokens, head_dim, generator=g, device="cuda", dtype=torch.bfloat16
        ).requires_grad_()
        for _ in range(4)
    )
    grad = torch.randn_like(q)

    def run() -> None:
        out = F.scaled_dot_product_attention(q, k, v) + F.scaled_dot_product_attention(qi, k, v)
        torch.autograd.grad(out, (q, qi, k, v), grad)

    return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")


def measure(
    shape: tuple[int, int, int],
    hidden: int,
    configs: list[tuple[int, int]],
    modes: list[str],
    head_dim: int,
) -> dict:
    """The modes of one layer shape (B, H, N): per mode the fastest config; with all modes, the layer's floor."""
    batch, heads, tokens = shape
    pairs = batch * tokens * tokens
    rec: dict = {"shape": f"{batch}x{heads}x{tokens}", "heads": heads, "hidden": hidden, "pairs": pairs}
    hp, ep, es = _mix_meta(heads, hidden)
    rec.update(channels=2 * heads, padded_channels=2 * hp, padded_hidden=ep, hidden_stride=es)
    for mode in modes:
        trials = {f"BP={bp},warps={w}": time_mode(pairs, heads, hidden, mode, bp, w) for bp, w in configs}
        best = min(trials, key=trials.get)
        rec[mode] = {"ms": trials[best], "config": best, "all_ms": trials}
    if {"forward", "backward_weight_grads"} <= set(modes):
        rec["floor_ms_per_layer"] = rec["forward"]["ms"] + rec["backward_weight_grads"]["ms"]
        if head_dim:
            rec["attention_ms"] = time_attention(batch, heads, tokens, head_dim)
            rec["layer_floor_ms"] = rec["attention_ms"] + rec["floor_ms_per_layer"]
    return rec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="256x6x197,256x12x197", help="BxHxN per layer, comma-separated")
    p.add_argument("--hidden", type=int, default=8, help="gate hidden width E")
    p.add_argument("--configs", nargs="+", default=["128,4", "256,4", "256,8", "512,8"], help="BP,num_warps")
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="forward and backward_weight_grads give the floor",
    )
    p.add_argument(
        "--head-dim", type=int, default=64, help="d of the two SDPA attentions timed beside (0: none)"
    )
    p.add_argument("--out", type=Path, default=Path("gate_floor.json"))
    args = p.parse_args(argv)
    args.shape_list = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s]
    args.config_list = [tuple(int(x) for x in c.split(",")) for c in args.configs]
    if any(len(s) != 3 for s in args.shape_list) or any(len(c) != 2 for c in args.config_list):
        p.error("--shapes takes BxHxN items, --configs BP,num_warps items")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gate_floor.py needs a CUDA GPU")
    report = {
        **environment(torch.device("cuda")),
        "what": "the head-mixing gate's FFN alone over every pair of a layer; floor = forward + backward with "
        "weight gradients (ms per layer); attention_ms: two SDPA attentions fwd + bwd (bf16) of the layer; "
        "layer_floor_ms: their sum",
        "results": [],
    }
    for shape in args.shape_list:
        rec = measure(shape, args.hidden, args.config_list, args.modes, args.head_dim)
        report["results"].append(rec)
        print(json.dumps(rec), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
