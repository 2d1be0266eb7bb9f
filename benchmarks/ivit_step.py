"""Time one I-ViT train step against a plain timm ViT: naive, compiled naive and fused interaction attention.

A step = forward (alignment maps requested through `InteractionViT.forward_aligned`) + classification_criterion +
backward + AdamW step, under bf16 autocast on CUDA. For every (model, mode, variant) the script records the
median step time over --steps steps after --warmup steps (CUDA events), img/s, peak memory
(torch.cuda.max_memory_allocated, reset per case) and the ratios to the plain ViT of the same model and mode.

Variants:
  plain           timm ViT (fused SDPA attention). mode "frozen": trains the head and every block's qkv (the
                  plain counterpart of P'_q), so that backward runs through every block as in I-ViT.
  fused           I-ViT, interaction attention through the Triton kernels (backend "fused").
  no_gate         I-ViT without the gated control network (Table 3's "iq_ic": g1 = g2 = 1/2), whose C_F V runs
                  as two SDPA calls (backend "reference"; every backend does that): the cost of interaction queries alone, and so a floor for any
                  gated implementation (a gated layer computes all of this layer's work and more).
  no_gate_one_sdpa  the same with both query sets in one SDPA call, (B, H, 2N, d), halves averaged.
  naive           I-ViT through the reference path (backend "reference").
  linear_gate     I-ViT with the per-pair linear gate (`gate_hidden=0`, no hidden layer), which has no kernel:
                  the reference path, so compare it with naive (the FFN gate on the same path) and fused.
  compiled        naive I-ViT under torch.compile.
Modes: "frozen" (IViTConfig.freeze_backbone=True) and "full" (fine-tune everything). The backend is set when
the model is built (IViTConfig.attention, see lfi.models.backends). The per-head gate (fused_per_head in
results/ivit_step_h200.json.gz) was measured slower than the mixing gate and is no longer in the library.

Every case is isolated: an OOM or any other error is recorded and the run goes on; the JSON is rewritten
after every case. Cases stop starting once --time-budget seconds have passed (recorded as skipped).

    python benchmarks/ivit_step.py --out results.json              # the full run (one GPU)
    python benchmarks/ivit_step.py --quick                         # smoke run: tiny batch, CPU or GPU
    python benchmarks/ivit_step.py --models vit_small_patch16_224 --modes frozen --profile 3   # + kernel times

--profile N adds to every case the device time of each kernel over N profiled steps (after the timed ones,
so the timings and peak memory are not affected), with the aten op(s) that launched it ("profile"), and the
attention kernels' share of it ("profile.attention_us", `profiling.attention_us`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention_kernels import one_sdpa  # noqa: E402  (benchmarks/, this script's folder)
from isolated import run_isolated  # noqa: E402
from profiling import attention_us, by_op, kernel_breakdown  # noqa: E402

from lfi.models.ivit import interactionize  # noqa: E402
from lfi.train.losses import classification_criterion  # noqa: E402

VARIANTS = ("plain", "fused", "no_gate", "no_gate_one_sdpa", "naive", "linear_gate", "compiled")
MODES = ("frozen", "full")
COMPILE_RESERVE_S = 150  # do not start a torch.compile case with less time than this left


def build(variant: str, model_name: str, mode: str, device: torch.device) -> tuple[nn.Module, bool]:
    """-> (model, is_ivit) on device, with the trainable parameters of the mode."""
    import timm

    vit = timm.create_model(model_name, pretrained=False, num_classes=1000)
    if variant == "plain":
        if mode == "frozen":
            for name, p in vit.named_parameters():
                p.requires_grad_(name.startswith("head.") or ".attn.qkv." in name)
        return vit.to(device), False
    gated = not variant.startswith("no_gate")
    backend = "fused" if variant == "fused" else "reference"
    model = interactionize(
        vit, inplace=True, freeze_backbone=mode == "frozen", gated_control=gated, attention=backend,
        gate_hidden=0 if variant == "linear_gate" else 8,
    )  # fmt: skip
    return model.to(device), True


@contextlib.contextmanager
def one_sdpa_ungated():
    """Ungated layers as one SDPA call over both query sets stacked along the query axis, (B, H, 2N, d), then
    the two halves averaged, instead of the library's two calls: the variant no_gate_one_sdpa (measured slower
    in the step: the stacking and the mean cost more copies than the single call saves, benchmarks/README.md).
    """
    ia = importlib.import_module("lfi.models.interaction_attention")  # lfi.models re-exports the function

    def one_call(q, k, v, scale, q_int, names, rows, attn_mask):
        mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.to(q.dtype)
        maps = ia.interaction_maps(names, q, q_int, k, scale, rows, attn_mask, None)
        return one_sdpa(q, k, v, scale, q_int, mask), maps

    library_path = ia._ungated_attention
    ia._ungated_attention = one_call
    try:
        yield
    finally:
        ia._ungated_attention = library_path


def variant_context(variant: str) -> contextlib.AbstractContextManager:
    """The attention path a variant runs under, beyond its model's backend: for no_gate_one_sdpa, the one-call
    ungated path."""
    return one_sdpa_ungated() if variant == "no_gate_one_sdpa" else contextlib.nullcontext()


def run_case(args, model_name: str, mode: str, variant: str, device: torch.device) -> dict:
    """Build, warm up and time one case. Returns its record (status 'ok')."""
    model, is_ivit = build(variant, model_name, mode, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    criterion = classification_criterion(aligned=is_ivit)  # task (+ align for I-ViT)
    step_model = torch.compile(model) if variant == "compiled" else model
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=g).to(device)
    labels = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    grid = args.img_size // 16
    teacher = torch.rand(args.batch, grid, grid, generator=g).to(device)
    teacher = teacher / teacher.sum(dim=(-2, -1), keepdim=True)
    batch = {
        "label": labels,
        "map": teacher,
        "map_valid": torch.ones(args.batch, dtype=torch.bool, device=device),
    }
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            if is_ivit:
                logits, maps = (
                    step_model.forward_aligned(x)
                    if variant != "compiled"
                    else _compiled_aligned(step_model, x)
                )
                losses = criterion({"logits": logits, "maps": torch.stack(list(maps.values()))}, batch)
            else:
                losses = criterion({"logits": step_model(x)}, batch)
        losses["loss"].backward()
        opt.step()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with variant_context(variant):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            step()
        times = []
        for _ in range(args.steps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                step()
                times.append((time.perf_counter() - t) * 1e3)
        peak_mem_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        profile = kernel_breakdown(step, args.profile, cuda) if args.profile else None
        if profile is not None:
            profile["attention_us"] = attention_us(profile)
    median = statistics.median(times)
    record = {
        "status": "ok",
        "step_ms_median": median,
        "step_ms_all": times,
        "img_per_s": args.batch / (median / 1e3),
        "peak_mem_gib": peak_mem_gib,
        "first_step_s": first,
        "trainable_params": sum(p.numel() for p in params),
    }
    return record if profile is None else record | {"profile": profile}


def _compiled_aligned(compiled: nn.Module, x: torch.Tensor):
    """forward_aligned through the compiled module (torch.compile wraps forward, not other methods)."""
    model = compiled._orig_mod
    request = model.alignment_request()
    out = compiled(x, request, model.align_layers)
    from lfi.maps import attention_to_grid

    grid = model.patch_grid(tuple(x.shape[-2:]))
    name = model.config.supervised_map
    return out.logits, {
        i: attention_to_grid(m[name], model.num_prefix_tokens, grid) for i, m in out.maps.items()
    }


def environment(device: torch.device) -> dict:
    import timm

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": " ".join([sys.executable, *sys.argv]),
    }


def add_ratios(results: list[dict]) -> None:
    """ratio_step / ratio_mem: each case against the plain ViT of the same model and mode."""
    plain = {(r["model"], r["mode"]): r for r in results if r["variant"] == "plain" and r["status"] == "ok"}
    for r in results:
        base = plain.get((r["model"], r["mode"]))
        if r["status"] != "ok" or base is None:
            continue
        r["ratio_step_vs_plain"] = r["step_ms_median"] / base["step_ms_median"]
        if r["peak_mem_gib"] is not None:
            r["ratio_mem_vs_plain"] = r["peak_mem_gib"] / base["peak_mem_gib"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=10, help="timed steps per case (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (Triton/compile happen here)")
    p.add_argument("--time-budget", type=float, default=420.0, help="seconds; later cases are skipped")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: $OUT/ivit_step.json or ./)")
    p.add_argument("--quick", action="store_true", help="smoke run: ViT-Ti, batch 2, 2 steps")
    p.add_argument("--profile", type=int, default=0, help="profiled steps per case (0: no kernel breakdown)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch, args.steps, args.warmup = ["vit_tiny_patch16_224"], 2, 2, 1
        # no torch.compile in a smoke run; no kernels on the CPU
        keep = (
            ("plain", "naive", "linear_gate", "no_gate", "no_gate_one_sdpa", "fused")
            if torch.cuda.is_available()
            else ("plain", "naive", "linear_gate", "no_gate", "no_gate_one_sdpa")
        )
        args.variants = [v for v in args.variants if v in keep]
    if args.out is None:
        args.out = Path(os.environ.get("OUT", ".")) / "ivit_step.json"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {
        **environment(device),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "step": "forward_aligned + classification_criterion (task + align) + backward + AdamW; bf16 autocast on CUDA",
        "plain_frozen_trains": "head + qkv of every block (backward through every block, as I-ViT frozen)",
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # torch.compile cases last: their compilation takes minutes, the budget should not starve the others
    cases = [
        (m, mode, v) for m in args.models for mode in args.modes for v in args.variants if v != "compiled"
    ]
    if "compiled" in args.variants:
        cases += [(m, mode, "compiled") for m in args.models for mode in args.modes]
    for model_name, mode, variant in cases:
        record = {"model": model_name, "mode": mode, "variant": variant, "batch": args.batch}
        left = args.time_budget - (time.perf_counter() - start)
        if left <= 0 or (variant == "compiled" and left < COMPILE_RESERVE_S):
            record |= {"status": "skipped", "error": f"time budget ({left:.0f} s left)"}
        else:
            record |= run_isolated(run_case, args, model_name, mode, variant, device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
        report["results"].append(record)
        add_ratios(report["results"])
        args.out.write_text(json.dumps(report, indent=1))
        print(json.dumps({k: v for k, v in record.items() if k not in ("step_ms_all", "traceback", "profile")}),
              flush=True)  # fmt: skip
        if "profile" in record:
            print(
                "  top ops (ms per step):",
                "; ".join(f"{op} {us / 1e3:.2f}" for op, us in by_op(record["profile"])[:12]),
            )
    report["total_wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
