"""Plain-text progress for logs: when stdout is not a terminal (a file, a scheduler's log), Lightning's bar
prints nothing readable until the end, so `ProgressLines` writes one line every `every_s` seconds or every
`every_pct` percent of an epoch instead:

    epoch 1/5 step 120/500 (24%) loss 2.3456 img/s 345.2

`progress_callbacks` picks: the bar on a TTY (`StepBar`), these lines elsewhere (see `build_trainer`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressLines(L.Callback):
    """One line per `every_s` seconds or `every_pct` percent of the epoch's steps (whichever comes first), and
    one at each epoch's end; rank 0 only. `clock` is injectable so that tests need no wall-clock timing."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = 60.0,
        every_pct: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.every_s, self.every_pct, self.clock = stream, every_s, every_pct, clock
        self._last_t = self._start_t = 0.0
        self._last_pct = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last_t = self._start_t = self.clock()
        self._last_pct, self._images = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += _images(batch)
        total = trainer.num_training_batches
        pct = 100.0 * (batch_idx + 1) / total if total and total != float("inf") else 0.0
        now = self.clock()
        last = total != float("inf") and batch_idx + 1 == total
        if now - self._last_t >= self.every_s or pct - self._last_pct >= self.every_pct or last:
            self._last_t, self._last_pct = now, pct
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._write(trainer, batch_idx + 1, total, pct, float(loss), now)

    def _write(
        self, trainer: L.Trainer, step: int, total: float, pct: float, loss: float, now: float
    ) -> None:
        if not trainer.is_global_zero:
            return
        rate = self._images / max(now - self._start_t, 1e-9)
        of = f"/{int(total)} ({pct:.0f}%)" if total != float("inf") else ""
        stream = self.stream or sys.stdout  # read at write time: pytest and schedulers swap sys.stdout
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {step}{of} loss {loss:.4f} img/s {rate:.1f}",
            file=stream,
            flush=True,
        )


def _images(batch: Any) -> int:
    """The number of images in a batch dict (classification and detection batches both carry 'image')."""
    image = batch.get("image") if isinstance(batch, dict) else None
    return int(image.shape[0]) if image is not None else 0


class StepBar(TQDMProgressBar):
    """Lightning's bar, its step count redrawn at every step, showing the logged `key` (the step's loss, which
    `LfiModule` logs every `every` steps) read when logged: a read copies it off the GPU, which waits for every
    step queued there, so a read per step would leave the GPU idle while the host launches the next one."""

    def __init__(self, every: int, key: str = "train/loss_step") -> None:
        super().__init__()
        self.every, self.key = every, key
        self.value: float | None = None
        self.read_at = 0  # the global step of the last read (none before the first step)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # global steps done: the logger gets step (done - 1) when done is a multiple of `every`
        done = trainer.global_step
        if done % self.every == 0 and done != self.read_at and self.key in trainer.callback_metrics:
            self.value, self.read_at = float(trainer.callback_metrics[self.key]), done
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        shown = super().get_metrics(trainer, module)
        return shown if self.value is None else {self.key: f"{self.value:.4g}", **shown}


def progress_callbacks(
    enabled: bool, stream: TextIO | None = None, every: int = 1
) -> tuple[bool, list[L.Callback]]:
    """(show a bar, extra callbacks): the bar on a terminal (`StepBar`, the loss read every `every` steps, the
    logging cadence), plain lines when output goes elsewhere, nothing when progress is off
    (`trainer.enable_progress_bar=false`)."""
    if not enabled:
        return False, []
    if (stream or sys.stdout).isatty():
        return True, [StepBar(every)]
    return False, [ProgressLines(stream)]
