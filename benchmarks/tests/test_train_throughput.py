"""benchmarks/train_throughput.py: FitClock splits a fit's wall time into parts that add up to it."""

from __future__ import annotations

from train_throughput import FitClock

from lfi.train.engine import train
from tests.train.conftest import tiny_config, tiny_data


def test_fit_clock_parts_add_up_to_the_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path))
    clock = FitClock()
    cfg = tiny_config(
        tmp_path, variant="vit", epochs=3, trainer={"check_val_every_n_epoch": 2, "sanity_val_steps": 0}
    )
    run = train(cfg, tiny_data(), callbacks=[clock])
    split = clock.report(run.metrics["train_seconds"])
    assert set(split) == {"steps_s", "setup_s", "validation_s", "epoch_edges_s", "end_s", "other_s"}
    parts = [v for k, v in split.items() if k != "other_s"]
    assert all(v > 0 for v in parts), split  # 3 epochs: two edges, validations after epochs 2 and 3
    assert abs(sum(split.values()) - run.metrics["train_seconds"]) < 0.01
