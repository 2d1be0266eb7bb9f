"""`lfi eval RUN [KEY=VALUE ...]`: a trained run's metrics on its config's test sets, any task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lfi.cli.train import add_overrides


def cmd_eval(args: argparse.Namespace) -> int:
    from lfi.config import config_from_dict, config_to_dict, merge, parse_overrides
    from lfi.evaluate.classification import cross_domain_summary, write_metrics
    from lfi.train.build import build_task
    from lfi.train.data import LfiDataModule, build_data
    from lfi.train.engine import evaluate
    from lfi.train.runs import add_evaluation, load_model, load_run

    run = load_run(args.run)
    # the run's own config, with the overrides (e.g. other test domains); the KD teacher is not needed
    cfg = config_from_dict(merge(config_to_dict(run.cfg), parse_overrides([*args.overrides, "loss.kd_weight=0"])),
                           f"{run.files.config} + overrides")  # fmt: skip
    run.cfg = cfg
    model = load_model(run, args.weights, args.device)
    data = build_data(cfg)
    grid = model.patch_grid((cfg.data.img_size,) * 2) if cfg.task == "classification" else None
    datamodule = LfiDataModule(cfg, data, grid)
    task = build_task(cfg, data)
    tests = {name: evaluate(model, task, loader, args.device) for name, loader in datamodule.test_loaders().items()}
    if cfg.task == "classification":
        tests |= cross_domain_summary(tests)
    evaluation = {"run": str(run.path), "weights": str(args.weights or run.files.weights), "overrides": args.overrides,
                  "test": tests}  # fmt: skip
    out = Path(args.out) if args.out else run.files.eval_metrics
    metrics = add_evaluation(out, evaluation)  # an earlier evaluation (e.g. other test folders) is kept
    if cfg.task == "classification":
        metrics["test"] |= cross_domain_summary(metrics["test"])
    path = write_metrics(metrics, out)
    print(json.dumps(tests, indent=2))
    print(f"metrics: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="a trained run's metrics on its test sets (top-1 per domain, or COCO AP)")
    p.add_argument("run", help="run folder of `lfi train` (config.yaml, metrics.json, model.safetensors)")
    add_overrides(p)
    p.add_argument("--weights", help="safetensors weights (default: RUN/model.safetensors)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="metrics JSON (default: RUN/eval_metrics.json)")
    p.set_defaults(func=cmd_eval)
