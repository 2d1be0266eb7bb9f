"""benchmarks/train_throughput.py: FitClock splits a fit's wall time into parts that add up to it and times the
garbage collector's passes; FitProfile times and profiles steps inside a fit."""

from __future__ import annotations

import gc

import lightning as L
import pytest
import torch
import train_throughput
from train_throughput import FitClock, FitProfile, step_rate

from lfi.train.engine import train
from tests.train.conftest import tiny_config, tiny_data


class FullCollection(L.Callback):
    """A full pass of the garbage collector at the first epoch's end (FitClock times it)."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            gc.collect()


def test_fit_clock_parts_add_up_to_the_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    drained = []  # the device is drained at the end of each epoch's last step: its queued work is step time
    monkeypatch.setattr(train_throughput, "_sync", lambda device: drained.append(device.type))
    clock = FitClock()
    cfg = tiny_config(
        tmp_path, variant="vit", epochs=3, trainer={"check_val_every_n_epoch": 2, "sanity_val_steps": 0}
    )
    run = train(cfg, tiny_data(), callbacks=[clock, FullCollection()])
    assert clock._gc not in gc.callbacks  # removed at the fit's teardown
    split = clock.report(run.metrics["train_seconds"])
    each = {k: split.pop(k) for k in ("validations_s", "edges_s")}
    collections = {k: split.pop(k) for k in ("gc0_s", "gc1_s", "gc2_s", "gc2_each_s")}
    assert len(collections["gc2_each_s"]) >= 1 and collections["gc2_s"] == pytest.approx(
        sum(collections["gc2_each_s"]), abs=1e-3
    )
    parts = ("before_s", "setup_s", "steps_s", "validation_s", "epoch_edges_s", "end_s", "teardown_s")
    assert set(split) == {*parts, "other_s"}
    parts = [v for k, v in split.items() if k != "other_s"]
    assert all(v > 0 for v in parts), split  # 3 epochs: two edges, validations after epochs 2 and 3
    assert abs(sum(split.values()) - run.metrics["train_seconds"]) < 0.01
    assert len(each["validations_s"]) == 2 and len(each["edges_s"]) == 2
    assert abs(sum(each["validations_s"]) - split["validation_s"]) < 0.001
    assert abs(sum(each["edges_s"]) - split["epoch_edges_s"]) < 0.001
    assert drained == ["cpu"] * 3


class Fail(L.Callback):
    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        raise RuntimeError("the fit fails")


def test_fit_clock_stops_timing_the_collector_when_the_fit_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    clock = FitClock()
    with pytest.raises(RuntimeError, match="the fit fails"):
        train(tiny_config(tmp_path, variant="vit", epochs=1), tiny_data(), callbacks=[clock, Fail()])
    assert clock._gc not in gc.callbacks


def test_fit_profile_reports_wall_busy_and_kernels_of_steps_inside_the_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    cfg = tiny_config(tmp_path, variant="vit", epochs=3, trainer={"sanity_val_steps": 0})
    profiled = FitProfile(steps=1, cuda=False)
    train(cfg, tiny_data(), callbacks=[profiled])  # 3 batches per epoch: step 1 of epochs 1 and 2
    _, bare = step_rate(cfg, torch.device("cpu"), steps=1, warmup=1, profiled=1)
    report = profiled.report(bare)
    assert (report["epochs"], report["first_step"], report["steps"]) == ([1, 2], 1, 1)
    for key in ("wall_ms", "profiled_wall_ms", "device_busy_ms", "kernels_per_step", "bare_kernels_per_step"):
        assert report[key] > 0, key
    assert report["top_kernels"] and all(k["us"] > 0 and k["calls"] > 0 for k in report["top_kernels"])
    assert all(k["extra_us"] > 0 for k in report["added_kernels"])


def test_fit_profile_refuses_a_window_the_epoch_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    cfg = tiny_config(tmp_path, variant="vit", epochs=3, trainer={"sanity_val_steps": 0})
    with pytest.raises(ValueError, match="--profile-fit-steps 3"):
        train(cfg, tiny_data(), callbacks=[FitProfile(steps=3, cuda=False)])
