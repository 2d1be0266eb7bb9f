"""The fixed costs of a run around its steps (issue 31): validation cadence with the final epoch always
validated, last.ckpt every N epochs and after the final one, weights-only best checkpoints, no sanity check."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch

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
