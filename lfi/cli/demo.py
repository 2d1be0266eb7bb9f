"""`lfi demo [--out runs/demo] [--data ROOT] [--random-init] [--quick]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from lfi.demo.pipeline import run_demo

    summary = run_demo(
        Path(args.out),
        Path(args.data) if args.data else None,
        "quick" if args.quick else "full",
        random_init=args.random_init,
    )
    print((Path(args.out) / "report.md").read_text())
    print(f"total {summary['timings_s']['total_s']} s; report: {Path(args.out) / 'report.md'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="offline demo in small: a pretrained student, ViT vs IQ+GC vs I-ViT over seeds, ID/OOD report",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument(
        "--data",
        help="shared data root holding weights/deit_tiny_patch16_224.safetensors (the pretrained student); "
        "default ../shared/data when it holds them, else the random-init fallback, named in the report",
    )
    p.add_argument("--random-init", action="store_true", help="use the random-init fallback student")
    p.add_argument("--quick", action="store_true", help="a tiny version (seconds), for tests")
    p.set_defaults(func=cmd_demo)
