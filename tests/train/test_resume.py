"""A run killed mid-epoch and resumed from its last checkpoint ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from lfi.train.run import train
from tests.train.conftest import tiny_config


class Kill(L.Callback):
    """Raise in the middle of epoch 1 (after epoch 0's checkpoint was written), like a killed job."""

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.current_epoch == 1 and trainer.fit_loop.epoch_loop.batch_progress.current.ready >= 2:
            raise RuntimeError("simulated kill")


def test_resume_after_kill_matches_uninterrupted(tiny):
    data, store, tmp = tiny
    straight = train(tiny_config(tmp / "a", epochs=3), data, store)

    cfg = tiny_config(tmp / "b", epochs=3)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg, data, store, callbacks=[Kill()])
    assert (cfg.run_dir / "checkpoints" / "last.ckpt").is_file() and not (
        cfg.run_dir / "metrics.json"
    ).exists()
    resumed = train(cfg, data, store, resume=True)

    assert resumed.metrics["test"] == straight.metrics["test"]
    assert resumed.metrics["global_step"] == straight.metrics["global_step"]
    a, b = load_file(straight.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_run_folder_contents(tiny):
    data, store, tmp = tiny
    run = train(tiny_config(tmp / "c", epochs=2), data, store)
    for name in (
        "config.yaml",
        "metrics.json",
        "model.safetensors",
        "checkpoints/last.ckpt",
        "logs/version_0/metrics.csv",
    ):
        assert (run.run_dir / name).is_file(), name
    assert list((run.run_dir / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"id", "ood", "mean_acc1", "var_acc1"}
    header = (run.run_dir / "logs/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    for column in (
        "val/acc1",
        "val/acc5",
        "train/task_epoch",
        "train/align_epoch",
        "train/loss_epoch",
        "epoch",
    ):
        assert column in header, column


def test_resume_needs_a_checkpoint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        train(tiny_config(tmp_path), resume=True)
