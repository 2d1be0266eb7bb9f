"""`lfi demo [--out runs/demo] [--data ROOT] [--quick]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from lfi.demo.pipeline import run_demo

    summary = run_demo(
        Path(args.out), Path(args.data) if args.data else None, "quick" if args.quick else "full", args.seed
    )
    print((Path(args.out) / "report.md").read_text())
    print(f"total {summary['timings_s']['total_s']} s; report: {Path(args.out) / 'report.md'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` sub-command."""
    p = subparsers.add_parser(
        "demo", help="offline end-to-end demo: data, teacher maps, ViT vs I-ViT, report"
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument(
        "--data", help="shared data root: run on PACS with the ViT teacher instead of synthetic data"
    )
    p.add_argument("--quick", action="store_true", help="a tiny version (seconds), for tests")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
