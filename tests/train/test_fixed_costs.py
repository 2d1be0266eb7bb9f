"""The fixed costs of a run around its steps (issue 31): validation cadence with the final epoch always
validated, last.ckpt every N epochs and after the final one, weights-only best checkpoints, no sanity check;
the heap frozen during the fit (no full collection walks it) and the writer process started before the build."""

from __future__ import annotations

import csv
import gc
from pathlib import Path

import lightning as L
import pytest
import torch

from lfi.train import engine
from lfi.train.checkpoint_writer import CheckpointWriter
from lfi.train.engine import train
from tests.train.conftest import tiny_config, tiny_data


class Record(L.Callback):
    """The epochs that validated or saved a full-state checkpoint (weights-only saves skip this hook), and
    sanity-check runs."""

    def __init__(self) -> None:
        self.validated, self.full, self.sanity = [], [], 0

    def on_sanity_check_start(self, trainer, module) -> None:
        self.sanity += 1

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        self.full.append(trainer.current_epoch)


def _run(tmp_path: Path, **trainer) -> tuple[Record, list[dict]]:
    record = Record()
    cfg = tiny_config(tmp_path, variant="vit", epochs=3, trainer=trainer)
    result = train(cfg, tiny_data(), callbacks=[record])
    with (result.run_dir / "metrics.csv").open() as f:
        return record, list(csv.DictReader(f))


def test_validation_every_n_epochs_and_always_after_the_final_one(tmp_path):
    record, rows = _run(tmp_path, check_val_every_n_epoch=2, sanity_val_steps=0)
    assert record.validated == [1, 2]  # epoch 2 is the last: validated although 3 is not a multiple of 2
    assert record.sanity == 0
    # metrics.csv: val/ only where validation ran (not the previous validation's values carried over)
    assert [bool(r["val/acc1"]) for r in rows] == [False, True, True]


def test_last_checkpoint_every_n_epochs_and_after_the_final_one(tmp_path):
    record, _ = _run(tmp_path, checkpoint_every_n_epochs=2)
    assert record.full == [1, 2]
    assert record.sanity == 1  # Lightning's sanity check stays the default
    checkpoints = tmp_path / "vit" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer_states" in last
    # best-epoch=N.ckpt holds the weights alone: --resume reads last.ckpt
    (best,) = checkpoints.glob("best-epoch=*.ckpt")
    assert "state_dict" in (state := torch.load(best, weights_only=True)) and "optimizer_states" not in state


class FreezeCount(L.Callback):
    """How many objects gc.freeze held when the training started."""

    def on_train_start(self, trainer, module) -> None:
        self.frozen = gc.get_freeze_count()


def test_the_objects_alive_at_the_fit_start_are_out_of_the_collector_during_the_fit_only(tmp_path):
    if gc.get_freeze_count():
        pytest.skip("the heap was frozen before this test (frozen_heap leaves a caller's freeze alone)")
    seen = FreezeCount()
    train(tiny_config(tmp_path, variant="vit", epochs=1), tiny_data(), callbacks=[seen])
    assert seen.frozen > 10_000  # torch, Lightning and the built run
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_the_caller_stays_frozen():
    gc.freeze()
    try:
        with engine.frozen_heap():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_heap_is_unfrozen_when_the_block_fails():
    with pytest.raises(KeyboardInterrupt), engine.frozen_heap():
        assert gc.get_freeze_count() > 0
        raise KeyboardInterrupt
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("rank", "node", "strategy", "starts"),
    [(0, "0", "auto", True), (1, "0", "ddp", False), (0, "1", "ddp", False), (0, "0", "ddp_spawn", False),
     (0, "0", "ddp_fork", False)],
)  # fmt: skip
def test_the_writer_starts_early_only_where_this_process_saves(monkeypatch, rank, node, strategy, starts):
    started = []
    monkeypatch.setattr(CheckpointWriter, "start", lambda self: started.append(self))
    monkeypatch.setattr(engine.rank_zero_only, "rank", rank)
    monkeypatch.setenv("NODE_RANK", node)
    engine.start_writer(strategy)
    assert bool(started) == starts


def test_the_writer_process_starts_before_the_build(tmp_path, monkeypatch):
    # its start (a fresh interpreter importing torch, seconds) overlaps the build and the fit, instead of
    # delaying the end of a short fit that would wait for it behind its first checkpoint
    events = []
    start, build = CheckpointWriter.start, engine.build
    monkeypatch.setattr(CheckpointWriter, "start", lambda self: events.append("start") or start(self))
    monkeypatch.setattr(engine, "build", lambda *args: events.append("build") or build(*args))
    train(tiny_config(tmp_path, variant="vit", epochs=1), tiny_data())
    assert events[:2] == ["start", "build"]
