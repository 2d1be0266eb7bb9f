"""benchmarks/step_overhead.py: the training steps of `lfi train` never make the host wait for the device
(issue 31), counted on the CPU by `StepSyncs`, which these tests also check."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from step_overhead import StepSyncs, StepWindow, tiny_config, tiny_data
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lfi.train.engine import train


def test_step_syncs_counts_what_would_wait_for_a_gpu():
    x, steps = torch.arange(6.0), torch.tensor(3.0)
    counter = StepSyncs()
    with counter, counter.host_reads():
        counter.counting, counter.exempt = True, {steps.data_ptr()}
        x.sum().item()  # a value read
        _ = x[x > 2]  # a boolean mask: the shape depends on the values
        _ = x[[0, 2]]  # a Python list as an index: a copy from host memory
        _ = torch.tensor([1.0, 2.0])  # host data
        x.tolist()
        float(steps)  # AdamW's step counter lives on the host in a CUDA run: no wait
        _ = x * 2 + x.flip(0)  # nothing to wait for
    kinds = sorted(call.split(":")[0] for call in counter.calls.elements())
    assert kinds == ["_local_scalar_dense", "index", "lift_fresh", "lift_fresh", "tolist"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.filterwarnings("ignore:The number of training batches")
@pytest.mark.parametrize("variant, bar", [("vit", False), ("iq_ic_gc", False), ("vit", True)])
def test_training_steps_never_wait_for_the_device(tmp_path, monkeypatch, variant, bar):
    """Ten whole steps of a fit (probe-like, I-ViT with its teacher maps, and with the progress bar of a
    terminal), the GPU data path on the CPU: no value read, no shape from the data, no host data made a
    tensor, logging steps included (every 5th: the step's terms wait on the device for the epoch's end).
    With a terminal's bar its reads are left out (one every log_every_n_steps: its cadence is the user's
    choice)."""
    monkeypatch.setattr(sys, "stdout", Terminal())  # a terminal: the bar, when progress is on
    data, store = tiny_data(tmp_path, variant, images=16 * 14)
    cfg = tiny_config(
        tmp_path / "runs", variant, "cpu", 1, 16, log_every_n_steps=100 if bar else 5, enable_progress_bar=bar
    )
    counter = StepSyncs()
    window = StepWindow(counter, first=2, last=12)
    with counter, counter.host_reads():
        run = train(cfg, data, store, callbacks=[window])
    assert (run.module.trainer.progress_bar_callback is not None) == bar
    assert counter.ops > 100 * window.steps  # the steps ran inside the window
    assert not counter.calls, f"host-device syncs in {window.steps} training steps: {dict(counter.calls)}"


@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_logging_steps_reach_the_logger_without_waiting(tmp_path):
    """Logging steps make no sync: the learning rates go to the logger as numbers (`LearningRates`;
    Lightning's LearningRateMonitor made a device tensor of each, a copy from pageable memory that waits for
    the GPU), the loss terms at the epoch's end, each at its own global step (Lightning's self.log would read
    them at the logging step)."""
    data, store = tiny_data(tmp_path, "vit", images=16 * 14)
    cfg = tiny_config(tmp_path / "runs", "vit", "cpu", 1, 16, log_every_n_steps=5)
    counter = StepSyncs()
    window = StepWindow(counter, first=2, last=12)
    with counter, counter.host_reads():
        run = train(cfg, data, store, callbacks=[window])
    assert not counter.calls, dict(counter.calls)
    events = EventAccumulator(str(run.run_dir / "tb"))
    events.Reload()
    rates = [tag for tag in events.Tags()["scalars"] if tag.startswith("lr-AdamW/")]
    assert rates and all(len(events.Scalars(tag)) == 3 for tag in rates)  # steps 0, 5, 10 of 14
    losses = [e.step for e in events.Scalars("train/loss_step")]
    assert losses == [4, 9]  # Lightning's cadence for step metrics: global step s with (s + 1) % 5 == 0
