"""`lfi eval RUN [KEY=VALUE ...]`: a trained run's metrics on its config's test sets, any task."""

from __future__ import annotations

import argparse
import json

from lfi.cli.train import add_overrides


def cmd_eval(args: argparse.Namespace) -> int:
    from lfi.evaluate.run import evaluate_run

    tests, path = evaluate_run(args.run, args.overrides, args.weights, args.device, args.out)
    print(json.dumps(tests, indent=2))
    print(f"metrics: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="a trained run's metrics on its test sets (top-1 per domain, or COCO AP)"
    )
    p.add_argument("run", help="run folder of `lfi train` (config.yaml, metrics.json, model.safetensors)")
    add_overrides(p)
    p.add_argument("--weights", help="safetensors weights (default: RUN/model.safetensors)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="metrics JSON (default: RUN/eval_metrics.json)")
    p.set_defaults(func=cmd_eval)
