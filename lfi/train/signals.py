"""Ctrl-C (SIGINT) and `kill` (SIGTERM) of a training run: finish the current step, save a resumable
checkpoint, and stop with `Interrupted`, which `lfi train` turns into exit code 130 / 143 and the command
that continues the run.

    stop = StopOnSignal(files.last_checkpoint)
    with stop:                                   # handlers for the whole `train` call
        trainer = L.Trainer(..., callbacks=[stop])
        trainer.fit(...)                         # inside the training loop: stop at the end of the step
        stop.raise_if_signalled()                # a signal during the last validation

Outside the training loop (building the data, the sanity check, the test evaluation) nothing is half done,
so the handler raises at once; the run folder then holds whatever the last checkpoint was.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped by a signal; `checkpoint`: the resumable checkpoint on disk (None if none yet)."""

    def __init__(self, signum: int, checkpoint: Path | None, step: int | None = None) -> None:
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        where = f" after step {step}" if step is not None else ""
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + self.signum


class StopOnSignal(L.Callback):
    """SIGINT / SIGTERM handlers for one `train` call (a context manager) and the callback that acts on them
    at the end of a training step: every process agrees to stop, `checkpoint` is written (the same state as
    a step checkpoint of `ModelCheckpoint`, so `--resume` continues exactly), then `Interrupted` is raised."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.signum: int | None = None
        self.deferred = False  # True inside the training loop: wait for the end of the step
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {s: signal.getsignal(s) for s in SIGNALS}
            self._install()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _install(self) -> None:
        if self._previous:
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # a second Ctrl-C while the checkpoint is written must not tear it
        self.signum = signum
        if not self.deferred:
            raise Interrupted(signum, self._saved())
        print(
            f"lfi train: {signal.Signals(signum).name}: stopping after this step (saving a checkpoint)",
            file=sys.stderr,
        )

    def _saved(self) -> Path | None:
        return self.checkpoint if self.checkpoint.is_file() else None

    def raise_if_signalled(self) -> None:
        """After fit: a signal that came when no training step was left (the last validation) stops here."""
        if self.signum is not None:
            raise Interrupted(self.signum, self._saved())

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Lightning set its own SIGTERM handler before this hook: it would stop without a checkpoint (exit 0)
        self._install()
        self.deferred = True

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        stepped = last or (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        # one decision for every process (a collective only with several), at optimizer steps only
        if stepped and trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):
            trainer.save_checkpoint(self.checkpoint)
            self.deferred = False
            raise Interrupted(self.signum or signal.SIGTERM, self.checkpoint, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.deferred = False

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.deferred = False
