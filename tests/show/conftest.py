"""Run folders for the show stage's tests: one trained for real by `lfi.train.engine.train` on a tiny
synthetic problem (once per session), and hand-made ones in the same format (`lfi.train.runs`) for settings
too big to train here (ViT-L, DETR-R50)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lfi.config import Config, config_from_dict, merge, save_config

IMG = 32
EPOCHS = 2


def tiny_config(out: Path, **sections: Any) -> Config:
    """A 2-block, 32-wide I-ViT on 32 px images, aligned to the oracle's maps; CPU, deterministic, quiet."""
    cfg = {
        "experiment": "tiny", "output_dir": str(out), "seed": 0,
        "teacher": {"name": "oracle", "store": str(out / "store")},
        "model": {"name": "vit_tiny_patch16_224", "variant": "iq_ic_gc",
                  "timm_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}},
        "data": {"dataset": "synthetic", "img_size": IMG, "batch_size": 16, "num_workers": 0, "augment": False},
        "optim": {"lr": 1e-3, "warmup_epochs": 0.5},
        "trainer": {"max_epochs": EPOCHS, "accelerator": "cpu", "devices": 1, "deterministic": True,
                    "enable_progress_bar": False, "log_every_n_steps": 1, "log_maps_every_n_epochs": 1},
    }  # fmt: skip
    return config_from_dict(merge(cfg, sections), "tiny_config")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder of `train` (2 epochs, 48 training images), with the maps logged to TensorBoard."""
    from lfi.demo.synthetic import ShortcutShapes
    from lfi.extract.oracle import OracleTeacher
    from lfi.extract.run import extract
    from lfi.show.tensorboard import LogInteractionMaps
    from lfi.store.shards import InteractionStore
    from lfi.train.data import ExperimentData
    from lfi.train.engine import train

    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(out)
    train_set, val = ShortcutShapes("train", 48, size=IMG), ShortcutShapes("val", 16, size=IMG)
    tests = {"id": ShortcutShapes("id", 16, size=IMG), "ood": ShortcutShapes("ood", 16, size=IMG)}
    data = ExperimentData(train_set, val, tests, train_set.classes)
    extract(OracleTeacher(grid=(8, 8)), train_set, cfg.teacher.store, progress=False)
    store = InteractionStore(cfg.teacher.store, expect={"teacher": "oracle"})
    callbacks = [LogInteractionMaps(every_n_epochs=cfg.trainer.log_maps_every_n_epochs, num_images=2)]
    return train(cfg, data, store, callbacks=callbacks).run_dir


def write_run(
    root: Path,
    config: dict[str, Any],
    tests: dict[str, dict[str, float]],
    curve: Sequence[float] = (),
    column: str = "val/acc1",
) -> Path:
    """A finished run folder as `train` leaves it, without weights: config.yaml, metrics.json (tests: {set:
    metrics}) and metrics.csv with one row per epoch of `curve` in `column`."""
    cfg = config_from_dict(merge({"output_dir": str(root)}, config), "write_run")
    run = cfg.run_dir
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    metrics = {
        "task": cfg.task, "experiment": cfg.experiment, "paper_row": cfg.paper_row, "teacher": cfg.teacher.name,
        "variant": cfg.model.variant, "seed": cfg.seed, "classes": ["a", "b"], "epochs": len(curve) or 3,
        "global_step": 30, "monitor": column, "best_val": max(curve, default=None), "best_epoch": None,
        "test": tests, "train_seconds": 1.0, "eval_seconds": 0.5,
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        with (run / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", column, "lr"])
            writer.writerows([e, 10 * (e + 1), 1.0 - 0.1 * e, v, 1e-4] for e, v in enumerate(curve))
    return run
