"""`lfi eval`: a trained run's metrics on its config's test sets, any task, added to RUN/eval_metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfi.config import config_from_dict, config_to_dict, merge, parse_overrides
from lfi.metrics.classification import cross_domain_summary, write_metrics
from lfi.train.build import build_task
from lfi.train.data import LfiDataModule, build_data
from lfi.train.engine import evaluate
from lfi.train.runs import add_evaluation, load_model, load_run


def evaluate_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    weights: str | Path | None = None,
    device: str = "cpu",
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """Score the run's student (`weights`, default its model.safetensors) on the test sets of its config with
    `overrides` (e.g. other test domains); the evaluation is added to `out` (default RUN/eval_metrics.json),
    an earlier one kept. Returns this evaluation's {test set: metrics} and the file written."""
    run = load_run(run_dir)
    # the run's own config, with the overrides; the KD teacher is not needed to score the student
    cfg = config_from_dict(merge(config_to_dict(run.cfg), parse_overrides([*overrides, "loss.kd_weight=0"])),
                           f"{run.files.config} + overrides")  # fmt: skip
    run.cfg = cfg
    model = load_model(run, weights, device)
    data = build_data(cfg)
    grid = model.patch_grid((cfg.data.img_size,) * 2) if cfg.task == "classification" else None
    loaders = LfiDataModule(cfg, data, grid).test_loaders()
    task = build_task(cfg, data)
    tests = {name: evaluate(model, task, loader, device) for name, loader in loaders.items()}
    if cfg.task == "classification":
        tests |= cross_domain_summary(tests)
    evaluation = {"run": str(run.path), "weights": str(weights or run.files.weights), "overrides": list(overrides),
                  "test": tests}  # fmt: skip
    path = Path(out) if out else run.files.eval_metrics
    metrics = add_evaluation(path, evaluation)  # an earlier evaluation (e.g. other test folders) is kept
    if cfg.task == "classification":
        metrics["test"] |= cross_domain_summary(metrics["test"])
    return tests, write_metrics(metrics, path)
