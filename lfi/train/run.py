"""One training run, end to end: config -> data + store -> Lightning fit -> evaluation -> run folder.

Run folder (cfg.output_dir / cfg.experiment):
    config.yaml          the resolved config (loads back with `lfi train -c`)
    logs/version_N/metrics.csv  CSVLogger, one version per start (a resumed run continues its epochs in the
                         next version): per-step and per-epoch train/{task,align,kd,loss}, val/{task,acc1,acc5}, lr
    tb/                  TensorBoard events of the same
    checkpoints/         last.ckpt (full state: weights, optimizer, schedule, loop; for --resume), best-*.ckpt
    model.safetensors    the final student weights (no pickle), for `lfi eval` and sharing
    metrics.json         final metrics: each test set's top-1/top-5, best val top-1, timings
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from safetensors.torch import save_file

from lfi.evaluate.classification import evaluate_sets, write_metrics
from lfi.extract.store import InteractionStore
from lfi.show.tensorboard import LogInteractionMaps
from lfi.train.config import Config, save_config
from lfi.train.data import ExperimentData, LfiDataModule, Transform, build_data
from lfi.train.module import LfiModule


@dataclass
class RunResult:
    """What `train` hands back: the trained module (rank 0 holds the final weights), metrics, run folder."""

    module: LfiModule
    metrics: dict[str, Any]
    run_dir: Path


def resolve_resume(cfg: Config, resume: str | bool | None) -> str | None:
    """--resume: True -> the run folder's checkpoints/last.ckpt (must exist); a path -> that file."""
    if not resume:
        return None
    path = cfg.run_dir / "checkpoints" / "last.ckpt" if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return str(path)


def build_trainer(cfg: Config, callbacks: list | None = None) -> L.Trainer:
    """A Trainer with the run folder's loggers and checkpoints, from cfg.trainer."""
    t, run_dir = cfg.trainer, cfg.run_dir
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-{epoch:03d}", monitor="val/acc1", mode="max",
        save_top_k=1, save_last=True,
    )  # fmt: skip
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision="32-true" if t.precision == "32" else t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        logger=[
            CSVLogger(run_dir, name="logs"),
            TensorBoardLogger(run_dir, name="tb", version=""),
        ],
        callbacks=[checkpoints, LearningRateMonitor("step"), *map_logging(t), *(callbacks or [])],
    )


def map_logging(t) -> list[L.Callback]:
    """The TensorBoard interaction-map figures, unless trainer.log_maps_every_n_epochs is 0."""
    return [LogInteractionMaps(every_n_epochs=t.log_maps_every_n_epochs)] if t.log_maps_every_n_epochs else []


def open_store(cfg: Config) -> InteractionStore:
    """The interaction store of cfg.teacher, checked to come from that teacher."""
    if cfg.teacher.store is None:
        raise ValueError(f"model.variant={cfg.model.variant!r} needs maps: set teacher.store")
    return InteractionStore(cfg.teacher.store, expect={"teacher": cfg.teacher.name})


def train(
    cfg: Config,
    data: ExperimentData | None = None,
    store: Any | None = None,
    resume: str | bool | None = None,
    train_transforms: Transform | None = None,
    eval_transforms: Transform | None = None,
    callbacks: list | None = None,
) -> RunResult:
    """Train cfg's student, evaluate it on every test set and fill the run folder (see module docstring).

    data / store default to cfg.data's datasets and cfg.teacher.store; `lfi demo` passes its own.
    """
    ckpt_path = resolve_resume(cfg, resume)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = cfg.run_dir
    data = data or build_data(cfg)
    module = LfiModule(cfg, len(data.classes), data.wnids)
    if module.needs_maps and store is None:
        store = open_store(cfg)
    img = cfg.data.img_size
    dm = LfiDataModule(
        cfg,
        data,
        module.model.patch_grid((img, img)),
        store if module.needs_maps else None,
        train_transforms,
        eval_transforms,
    )
    trainer = build_trainer(cfg, callbacks)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    train_s = time.perf_counter() - start
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        start = time.perf_counter()
        device = trainer.strategy.root_device  # Lightning hands the module back on the CPU after fit
        tests = evaluate_sets(module.model.to(device), dm.test_loaders(), device)
        metrics = {
            "experiment": cfg.experiment,
            "paper_row": cfg.paper_row,
            "teacher": cfg.teacher.name,
            "variant": cfg.model.variant,
            "kd_weight": cfg.loss.kd.weight,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "best_val_acc1": _float(trainer.checkpoint_callback.best_model_score, scale=100.0),
            "test": tests,
            "train_seconds": round(train_s, 2),
            "eval_seconds": round(time.perf_counter() - start, 2),
        }
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()},
            str(run_dir / "model.safetensors"),
        )
        write_metrics(metrics, run_dir / "metrics.json")
    return RunResult(module, metrics, run_dir)


def _float(value: torch.Tensor | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(float(value) * scale, 4)
