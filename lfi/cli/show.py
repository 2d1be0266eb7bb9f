"""`lfi viz`, `lfi curves`, `lfi report`, `lfi params`: the show stage's commands."""

from __future__ import annotations

import argparse
import json


def cmd_params(args: argparse.Namespace) -> int:
    from lfi.models.overhead import overhead

    for name in args.models:
        print(json.dumps(overhead(name, args.flops)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from lfi.show.curves import register as register_curves
    from lfi.show.report import register as register_report
    from lfi.show.viz import register as register_viz

    register_viz(subparsers)
    register_curves(subparsers)
    register_report(subparsers)
    p = subparsers.add_parser("params", help="parameter (and FLOP) overhead of I-ViT over timm ViTs (Table 1)")
    p.add_argument("models", nargs="+", help="timm model names, e.g. vit_small_patch16_224")
    p.add_argument("--flops", action="store_true", help="also count forward FLOPs (builds real weights)")
    p.set_defaults(func=cmd_params)
