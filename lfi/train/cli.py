"""`lfi train -c configs/x.yaml [section.key=value ...] [--resume [CKPT]]`."""

from __future__ import annotations

import argparse
import json

from lfi.train.config import load_config


def cmd_train(args: argparse.Namespace) -> int:
    from lfi.train.run import train  # Lightning loads only when training

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result.metrics:
        print(json.dumps(result.metrics["test"], indent=2))
        print(f"run folder: {result.run_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    p = subparsers.add_parser("train", help="train a ViT / I-ViT / baseline from a config (Lightning)")
    p.add_argument("-c", "--config", required=True, help="experiment YAML (see configs/)")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. trainer.max_epochs=3"
    )
    p.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CKPT",
        help="resume from CKPT, or from the run folder's checkpoints/last.ckpt when no path is given",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)
