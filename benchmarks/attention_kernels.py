"""Kernel-level timing of fused interaction attention: where the GPU time of one attention call goes.

For every shape (BxHxNxd) and gate kind ("none": an ungated layer, "mix": the gate of Eq. 5, w1 (E, 2H)) on
random normal inputs (gate weights std 0.5, as tests/kernels/fused_cases.py; same dtype as q), one CUDA GPU:
  sdpa       F.scaled_dot_product_attention: forward (no grad) and forward+backward (grads of q, k, v)
  fused      gate "mix" only: fused_interaction_attention (request=None): forward (no grad), forward+backward
             (grads of q, k, v, q_int and the gate weights, random cotangent), and a per-kernel breakdown of
             forward+backward (torch.profiler, CUDA device time by kernel name, summed over calls, averaged over
             --prof-iters)
  reference  interaction_attention, the reference (none: its two SDPA calls), fwd and fwd+bwd; OOM recorded
  one_sdpa   gate "none" only: both query sets in one SDPA call, (B, H, 2N, d), the two halves averaged
The kernels of the ungated ("none") and the per-head gate modes measured in results/attention_kernels_h200.json
are no longer in the library (ungated layers run as two SDPA calls, faster; the per-head gate was slower than
the mixing gate). Times: triton.testing.do_bench(return_mode="median"), ms. Every case is isolated (errors recorded, the run
goes on); the JSON is rewritten after every case; a compact table is printed at the end.

    python benchmarks/attention_kernels.py                                   # defaults, one GPU
    python benchmarks/attention_kernels.py --shapes 256x6x197x64 --gates mix --out $OUT/ak.json
    python benchmarks/attention_kernels.py --quick --out /tmp/ak.json        # smoke run, CPU or GPU
    python benchmarks/attention_kernels.py --gates mix --blocks gate_bwd=16,16,16,1   # try other tiles

--blocks overrides entries of lfi.models.kernels.fused.BLOCKS (kernel=BM,BN,num_warps,num_stages, space-
separated) for the whole run; the tiles in force are recorded in the JSON ("blocks").

--quick: shape 2x2x20x32, short timings. On a CPU (dtype fp32 unless --dtype), timings use time.perf_counter and
the profiler reports CPU op self-time; fused cases run only under TRITON_INTERPRET=1 (set before start), else
they are skipped with the reason recorded. CPU numbers only show that the script works.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from isolated import run_isolated  # noqa: E402  (benchmarks/, this script's folder)
from profiling import kernel_breakdown  # noqa: E402

from lfi.models.interaction_attention import GateWeights, interaction_attention  # noqa: E402
from lfi.models.kernels import fused, fused_interaction_attention  # noqa: E402

GATES = ("none", "mix")
DERIVED = ("shape_list", "gate_list", "impl_list", "block_overrides")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def make_inputs(shape: tuple[int, ...], gate: str, hidden: int, dtype: torch.dtype, dev: torch.device):
    """-> q, k, v, q_int (leaves), GateWeights or None, cotangent of out (all random normal, seeded)."""
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*s: int, std: float = 1.0) -> torch.Tensor:
        return (torch.randn(*s, generator=g, device=dev) * std).to(dtype).requires_grad_()

    q, k, v, qi = (rnd(*shape) for _ in range(4))
    width = 2 * shape[1]
    sizes = ((hidden, width), (hidden,), (width, hidden), (width,))
    w = GateWeights(*(rnd(*s, std=0.5) for s in sizes)) if gate == "mix" else None
    return q, k, v, qi, w, torch.randn(*shape, generator=g, device=dev).to(dtype)


def one_sdpa(q, k, v, scale: float, q_int, attn_mask=None) -> torch.Tensor:
    """(C_AGT V + C_VFM V) / 2 as one SDPA call over both query sets stacked along the query axis, (B, H, 2N, d),
    the halves averaged: the rejected alternative to the library's two calls (benchmarks/README.md)."""
    if attn_mask is not None and attn_mask.dim() >= 2 and attn_mask.shape[-2] != 1:
        attn_mask = torch.cat([attn_mask, attn_mask], dim=-2)  # a per-query mask follows each set's rows
    both = F.scaled_dot_product_attention(
        torch.cat([q_int, q], dim=2), k, v, attn_mask=attn_mask, scale=scale
    )
    return both.unflatten(2, (2, q.shape[2])).mean(2)


def callables(impl: str, inputs) -> tuple[Callable[[], None], Callable[[], None]]:
    """-> (forward without grad, forward + backward) of one implementation on the inputs."""
    q, k, v, qi, gate, gout = inputs
    scale = q.shape[-1] ** -0.5
    if impl == "sdpa":
        leaves = [q, k, v]

        def call():
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
    elif impl == "one_sdpa":
        leaves = [q, k, v, qi]

        def call():
            return one_sdpa(q, k, v, scale, qi)
    else:
        leaves = [q, k, v, qi, *(gate or ())]
        fn = fused_interaction_attention if impl == "fused" else interaction_attention

        def call():
            return fn(q, k, v, scale, q_int=qi, gate=gate)[0]

    def fwd() -> None:
        with torch.no_grad():
            call()

    def fwd_bwd() -> None:
        torch.autograd.grad(call(), leaves, gout)

    return fwd, fwd_bwd


def bench(fn: Callable[[], None], args: argparse.Namespace, cuda: bool) -> float:
    """Median ms of fn: triton's do_bench on CUDA, time.perf_counter on the CPU."""
    if cuda:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median")
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def run_case(args, shape, gate: str, impl: str, dev: torch.device) -> dict:
    cuda = dev.type == "cuda"
    if impl == "one_sdpa" and gate != "none":
        return {"status": "skipped", "error": "one_sdpa is the ungated path: gate 'none' only"}
    if impl == "fused" and gate != "mix":
        return {"status": "skipped", "error": "the kernels take gated layers only: gate 'mix'"}
    if impl == "fused" and not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return {"status": "skipped", "error": "no CUDA and TRITON_INTERPRET!=1: the kernels need CUDA"}
    fwd, fwd_bwd = callables(impl, make_inputs(shape, gate, args.hidden, DTYPES[args.dtype], dev))
    rec = {"status": "ok", "ms_fwd": bench(fwd, args, cuda), "ms_fwd_bwd": bench(fwd_bwd, args, cuda)}
    if cuda:  # memory one fwd+bwd needs above its inputs (apart from do_bench's L2-flush buffer)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        torch.cuda.synchronize()
        rec["extra_mem_gib_fwd_bwd"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    if impl == "fused":
        try:
            rec["profile"] = kernel_breakdown(fwd_bwd, args.prof_iters, cuda)
        except Exception as e:  # the timings stand without it
            rec["profile_error"] = f"{type(e).__name__}: {e}"[:2000]
    return rec


def environment(dev: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": getattr(sys.modules.get("triton"), "__version__", None),  # imported by lfi.models.kernels
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def print_table(results: list[dict]) -> None:
    print(f"\n{'case':<34} {'ms fwd':>9} {'ms f+b':>9} {'x sdpa':>7}  top kernels (us per fwd+bwd)")
    for r in results:
        case = f"{r['shape']} {r['gate']} {r['impl']}"
        if r["status"] != "ok":
            print(f"{case:<34} {r['status']}: {r.get('error', '')[:90]}")
            continue
        ratio = r.get("ratio_fwd_bwd_vs_sdpa")
        ratio_s = f"{ratio:7.2f}" if ratio is not None else f"{'-':>7}"
        top = "; ".join(
            f"{k['label'][:40]} {k['us']:.1f}" for k in r.get("profile", {}).get("kernels", [])[:6]
        )
        print(f"{case:<34} {r['ms_fwd']:9.3f} {r['ms_fwd_bwd']:9.3f} {ratio_s}  {top}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--shapes", default="256x6x197x64,256x12x197x64,8x8x1000x32", help="BxHxNxd, comma-separated"
    )
    p.add_argument("--gates", default=",".join(GATES), help="comma-separated subset of none,mix")
    p.add_argument("--hidden", type=int, default=8, help="gate hidden width E")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="bf16 (default; fp32 for --quick on a CPU)")
    p.add_argument("--impls", default="sdpa,fused,reference", help="comma-separated subset of these")
    p.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warmup (ms)")
    p.add_argument("--rep-ms", type=float, default=100.0, help="do_bench repetition time (ms)")
    p.add_argument("--prof-iters", type=int, default=5, help="profiled fwd+bwd iterations (after 3 warm-up)")
    p.add_argument("--time-budget", type=float, default=480.0, help="seconds; later cases are skipped")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "attention_kernels.json")
    p.add_argument("--quick", action="store_true", help="smoke run: shape 2x2x20x32, short timings, CPU ok")
    p.add_argument("--blocks", default="", help="tile overrides: kernel=BM,BN,num_warps,num_stages ...")
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(shapes="2x2x20x32", warmup_ms=5.0, rep_ms=20.0, prof_iters=2)
    elif not torch.cuda.is_available():
        p.error("needs a CUDA GPU (use --quick for a CPU smoke run)")
    cpu_quick = args.quick and not torch.cuda.is_available()
    args.dtype = args.dtype or ("fp32" if cpu_quick else "bf16")  # the interpreter runs fp32 (as the tests)
    args.shape_list = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s]
    args.gate_list = [g for g in args.gates.split(",") if g]
    args.impl_list = [i for i in args.impls.split(",") if i]
    bad = [s for s in args.shape_list if len(s) != 4] + sorted(set(args.gate_list) - set(GATES))
    bad += sorted(set(args.impl_list) - {"sdpa", "fused", "reference", "one_sdpa"})
    if bad:
        p.error(f"invalid shapes/gates/impls: {bad}")
    try:
        args.block_overrides = parse_blocks(args.blocks)
    except ValueError as e:
        p.error(str(e))
    return args


def parse_blocks(spec: str) -> dict[str, tuple[int, int, int, int]]:
    """'gate_bwd=16,16,16,1 fwd=16,32,8,1' -> {kernel: (BM, BN, num_warps, num_stages)}."""
    overrides = {}
    for item in spec.split():
        kernel, _, value = item.partition("=")
        parts = value.split(",")
        if kernel not in fused.BLOCKS or len(parts) != 4 or not all(x.isdigit() for x in parts):
            raise ValueError(
                f"--blocks {item!r}: expected kernel=BM,BN,num_warps,num_stages with kernel one of "
                f"{sorted(fused.BLOCKS)}"
            )
        overrides[kernel] = tuple(int(x) for x in parts)
    return overrides


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    fused.BLOCKS.update(args.block_overrides)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kept = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in DERIVED}
    blocks = {k: list(v) for k, v in fused.BLOCKS.items()}
    report = {**environment(dev), "args": kept, "blocks": blocks, "results": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cases = [(s, "-", "sdpa") for s in args.shape_list if "sdpa" in args.impl_list]
    cases += [
        (s, g, i) for s in args.shape_list for g in args.gate_list for i in args.impl_list if i != "sdpa"
    ]
    sdpa_ms: dict[str, float] = {}
    for shape, gate, impl in cases:
        name = "x".join(map(str, shape))
        rec = {"shape": name, "gate": gate, "impl": impl, "dtype": args.dtype}
        if time.perf_counter() - start > args.time_budget:
            rec |= {"status": "skipped", "error": "time budget spent"}
        else:
            rec |= run_isolated(run_case, args, shape, gate, impl, dev)
        if impl == "sdpa" and rec["status"] == "ok":
            sdpa_ms[name] = rec["ms_fwd_bwd"]
        if rec["status"] == "ok" and name in sdpa_ms:
            rec["ratio_fwd_bwd_vs_sdpa"] = rec["ms_fwd_bwd"] / sdpa_ms[name]
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        report["results"].append(rec)
        args.out.write_text(json.dumps(report, indent=1))
        print(json.dumps({k: v for k, v in rec.items() if k not in ("profile", "traceback")}), flush=True)
    report["total_wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, indent=1))
    print_table(report["results"])
    return report


if __name__ == "__main__":
    main()
