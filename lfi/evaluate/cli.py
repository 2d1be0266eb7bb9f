"""`lfi eval RUN_DIR [section.key=value ...]`: evaluate a run's exported weights on its config's test sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lfi.train.config import load_config


def cmd_eval(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from lfi.evaluate.classification import evaluate_sets, write_metrics
    from lfi.train.data import LfiDataModule, build_data
    from lfi.train.module import LfiModule

    run = Path(args.run)
    # The KD teacher is a training-time term only: never built for evaluation.
    cfg = load_config(run / "config.yaml", [*args.overrides, "loss.kd.weight=0"])
    weights = Path(args.weights) if args.weights else run / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"no weights at {weights} (a finished `lfi train` run writes model.safetensors)"
        )
    data = build_data(cfg)
    module = LfiModule(cfg, len(data.classes))
    module.model.load_state_dict(load_file(str(weights)))
    img = cfg.data.img_size
    dm = LfiDataModule(cfg, data, module.model.patch_grid((img, img)))
    module.model.to(args.device)
    tests = evaluate_sets(module.model, dm.test_loaders(), args.device)
    metrics = {"run": str(run), "weights": str(weights), "test": tests}
    path = write_metrics(metrics, Path(args.out) if args.out else run / "eval_metrics.json")
    print(json.dumps(metrics["test"], indent=2))
    print(f"metrics: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` sub-command."""
    p = subparsers.add_parser("eval", help="top-1/top-5 of a trained run on its test sets (one per domain)")
    p.add_argument("run", help="run folder of `lfi train` (holds config.yaml and model.safetensors)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. data.test_domains=[cartoon,sketch] data.root=/data",
    )
    p.add_argument("--weights", help="safetensors weights (default: RUN/model.safetensors)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="metrics JSON (default: RUN/eval_metrics.json)")
    p.set_defaults(func=cmd_eval)
