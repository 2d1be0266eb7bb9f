"""Registers, spills, shared memory and SASS instruction mix of the fused attention kernels, compiled offline.

Compiles each kernel for an NVIDIA target (default sm_90: H100, H200) as the launchers of
`lfi.models.kernels.fused` configure it (tiles and warps from `fused.BLOCKS`, padded widths from `_mix_meta`), on
a machine without a GPU: Triton's bundled ptxas reports registers, spills and stack frame,
cuobjdump disassembles the SASS, whose opcodes are counted. The counts are static (what the kernel contains, not
what it executes), enough to see spills, layout shuffles through shared memory (LDS/STS) or unvectorised loads
before spending GPU time. Pointers and integer arguments are marked 16-divisible, as Triton's JIT marks the
buffers and strides of real launches.

    python benchmarks/kernel_resources.py --heads 6 --out /tmp/kernel_resources.json
    python benchmarks/kernel_resources.py --heads 12 --kernels gate_bwd --blocks gate_bwd=16,16,4,1

Pairs with `attention_once.py`, which runs the same kernels on a GPU under Nsight Compute.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from attention_kernels import parse_blocks  # noqa: E402  (benchmarks/, this script's folder)

from lfi.models.kernels import fused  # noqa: E402

KERNEL_FUNCTIONS = {
    "lse": "_triton._lse_kernel",
    "fwd": "_mix._mix_fwd_kernel",
    "gate_bwd": "_mix._mix_gate_bwd_kernel",
    "dkdv": "_mix._mix_dkdv_kernel",
    "dq": "_mix._mix_dq_kernel",
}
INPUT_POINTERS = {"Q", "QI", "K", "V", "DO", "OUT", "DK", "DV", "DQ", "DQI"}
ACTIVATION_POINTERS = {"DP", "CF"}  # what the mixing gate's backward saves per pair
FLOAT_SCALARS = {"scale_log2", "scale"}
INT_SCALARS = {"N", "H"}  # upper-case names are buffers, except these two
TRITON_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SASS_OPCODE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


def kernel_function(kernel: str):
    """The @triton.jit function that runs `kernel` ("lse", "fwd", ...)."""
    from lfi.models.kernels import _mix, _triton

    module_name, name = KERNEL_FUNCTIONS[kernel].split(".")
    return getattr({"_mix": _mix, "_triton": _triton}[module_name], name)


def constexpr_values(kernel: str, args: argparse.Namespace, blocks: dict) -> tuple[dict, dict]:
    """-> the kernel's constexpr values (a superset; each kernel takes the ones it declares), launch options.

    blocks: `fused.BLOCKS` with the --blocks overrides."""
    dtype = DTYPES[args.dtype]
    bm, bn, warps, stages = blocks[kernel]
    prec = "ieee" if dtype == torch.float32 else "tf32"
    hp, ep, es = fused._mix_meta(args.heads, args.hidden)
    values = dict(HAS_KB=args.key_mask, BM=bm, BN=bn, D=args.head_dim, PREC=prec)
    values.update(HP=hp, EP=ep, ES=es, E=args.hidden)
    return values, {"num_warps": warps, "num_stages": stages}


def pointer_type(name: str, dtype: torch.dtype) -> str:
    """Element type of the buffer `name`: the inputs' dtype, the launcher's activation dtype for DP/CF, else fp32."""
    if name in INPUT_POINTERS:
        return TRITON_DTYPES[dtype]
    if name in ACTIVATION_POINTERS:
        return "fp32" if dtype == torch.float32 else "bf16"
    return "fp32"


def signature(fn, values: dict, dtype: torch.dtype) -> tuple[dict, dict, dict]:
    """Triton signature, constexprs and 16-divisibility attributes of `fn` from its parameter names."""
    sig, consts, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            sig[name], consts[name] = "constexpr", values[name]
        elif name.isupper() and name not in INT_SCALARS:
            sig[name], attrs[(i,)] = f"*{pointer_type(name, dtype)}", [["tt.divisibility", 16]]
        elif name in FLOAT_SCALARS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("s"):  # strides: multiples of 16 elements in every real launch
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, consts, attrs


def tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def resources(fn, values: dict, options: dict, dtype: torch.dtype, arch: int) -> dict:
    """Compile `fn` for sm_<arch>; -> registers, spills, stack, shared memory and SASS opcode counts."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, consts, attrs = signature(fn, values, dtype)
    compiled = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
        target=GPUTarget("cuda", arch, 32),
        options=options,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        ptx.write_text(compiled.asm["ptx"])
        cubin.write_bytes(compiled.asm["cubin"])
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        report = subprocess.run(
            [tool("ptxas"), "-v", "--gpu-name", gpu, str(ptx), "-o", str(Path(tmp) / "v.cubin")],
            capture_output=True, text=True, check=True,
        ).stderr  # fmt: skip
        sass = subprocess.run(
            [tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, check=True
        )
    opcodes = collections.Counter(
        m.group(1).split(".")[0] for line in sass.stdout.splitlines() if (m := SASS_OPCODE.match(line))
    )

    def number(pattern: str) -> int:
        m = re.search(pattern, report)
        return int(m.group(1)) if m else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_store_bytes": number(r"(\d+) bytes spill stores"),
        "spill_load_bytes": number(r"(\d+) bytes spill loads"),
        "stack_frame_bytes": number(r"(\d+) bytes stack frame"),
        "shared_memory_bytes": compiled.metadata.shared,
        **options,
        "tile": [values["BM"], values["BN"]],
        "sass_instructions": sum(opcodes.values()),
        "sass_opcodes": dict(opcodes.most_common()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--hidden", type=int, default=8, help="gate hidden width E")
    p.add_argument("--head-dim", type=int, default=64, choices=fused.HEAD_DIMS)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    p.add_argument("--key-mask", action="store_true", help="compile the key-mask (DETR padding) variant")
    p.add_argument(
        "--kernels", nargs="+", default=None, help=f"subset of {tuple(KERNEL_FUNCTIONS)} (default: all)"
    )
    p.add_argument("--blocks", default="", help="tile overrides as in attention_kernels.py: kernel=BM,BN,w,s")
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: sm_90 H100/H200)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import triton

    args = parse_args(argv)
    blocks = {**fused.BLOCKS, **parse_blocks(args.blocks)}
    kernels = args.kernels or tuple(KERNEL_FUNCTIONS)
    unknown = set(kernels) - set(KERNEL_FUNCTIONS)
    if unknown:
        raise SystemExit(f"--kernels {sorted(unknown)}: expected some of {tuple(KERNEL_FUNCTIONS)}")
    report = {
        "target": f"sm_{args.arch}",
        "triton": triton.__version__,
        "command": " ".join(
            ["python", "benchmarks/kernel_resources.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "kernels": {},
    }
    for kernel in kernels:
        values, options = constexpr_values(kernel, args, blocks)
        fn = kernel_function(kernel)
        report["kernels"][kernel] = info = resources(fn, values, options, DTYPES[args.dtype], args.arch)
        top = ", ".join(f"{op} {n}" for op, n in list(info["sass_opcodes"].items())[:8])
        print(
            f"{kernel:<9} {info['registers']:>3} regs, spills {info['spill_store_bytes']:>4} B,"
            f" smem {info['shared_memory_bytes'] / 1024:6.1f} KiB, SASS {info['sass_instructions']:>5}: {top}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
