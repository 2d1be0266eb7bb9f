"""Issue 33 item 4: with stdout not a terminal (a file, a scheduler's log), training prints plain progress lines
instead of a bar that shows nothing until the end; on a terminal the bar stays."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lfi.train.engine import train
from lfi.train.progress import ProgressLines, StepBar, progress_callbacks
from tests.train.conftest import tiny_config

LINE = re.compile(r"^epoch (\d+)/2 step (\d+)/3 \(\d+%\) loss \d+\.\d{4} img/s \d+\.\d$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_on_a_terminal_plain_lines_elsewhere():
    bar, extra = progress_callbacks(True, Terminal(), every=5)
    assert bar and [type(c) for c in extra] == [StepBar] and extra[0].every == 5
    bar, extra = progress_callbacks(True, io.StringIO())
    assert not bar and [type(c) for c in extra] == [ProgressLines]
    assert progress_callbacks(False, io.StringIO()) == (False, [])


def test_training_to_a_log_prints_progress_lines(tiny, capsys):
    """pytest's captured stdout is not a terminal, as a log file is not: each step here is 33% of an epoch."""
    data, store, tmp = tiny
    run = train(tiny_config(tmp / "p", epochs=2, trainer={"enable_progress_bar": True}), data, store)
    assert run.module.trainer.progress_bar_callback is None
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [LINE.match(line).groups() for line in lines] == [(e, s) for e in "12" for s in "123"], lines


def test_a_line_every_n_seconds_between_percent_steps():
    """The time trigger, on an injected clock (no wall-clock dependence): 1000 steps, a line at most every 10%."""
    now = [0.0]
    stream = io.StringIO()
    lines = ProgressLines(stream, every_s=30.0, every_pct=10.0, clock=lambda: now[0])
    trainer = SimpleNamespace(num_training_batches=1000, current_epoch=0, max_epochs=1, is_global_zero=True)
    batch = {"image": torch.zeros(4, 3, 2, 2)}
    lines.on_train_epoch_start(trainer, None)
    for step in range(10):  # 1% of the epoch per step, 20 s per step: a line every 40 s
        now[0] += 20.0
        lines.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.5)}, batch, step)
    written = stream.getvalue().splitlines()
    assert [line.split()[3] for line in written] == ["2/1000", "4/1000", "6/1000", "8/1000", "10/1000"]
    assert written[0] == "epoch 1/1 step 2/1000 (0%) loss 1.5000 img/s 0.2"


def test_the_bar_shows_the_loss_of_every_nth_step(tiny, monkeypatch):
    """On a terminal the bar reads the step's loss at the logging cadence (each read waits for a GPU),
    the value the logger got for that step."""
    data, store, tmp = tiny
    monkeypatch.setattr("sys.stdout", Terminal())
    cfg = tiny_config(tmp / "b", epochs=1, trainer={"enable_progress_bar": True, "log_every_n_steps": 3})
    trainer = train(cfg, data, store).module.trainer
    bar = trainer.progress_bar_callback
    assert isinstance(bar, StepBar) and bar.every == 3  # 3 steps per epoch: read once, at the last
    events = EventAccumulator(str(Path(trainer.default_root_dir) / "tb"))
    events.Reload()
    logged = events.Scalars("train/loss_step")
    assert [e.step for e in logged] == [2] and bar.value == pytest.approx(logged[0].value, rel=1e-6)
    assert bar.get_metrics(trainer, None)["train/loss_step"] == f"{bar.value:.4g}"
