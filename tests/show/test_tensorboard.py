"""LogInteractionMaps, handed to the engine's `train`, writes the maps as image summaries TensorBoard reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lfi.show.tensorboard import TAG, LogInteractionMaps


def test_callback_logs_an_image_summary_per_validation_epoch(trained_run: Path) -> None:
    events = EventAccumulator(str(trained_run / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert TAG in events.Tags()["images"]
    logged = events.Images(TAG)
    # one per epoch (48 images in batches of 16: 3 steps each), none for the sanity check
    assert [e.step for e in logged] == [3, 6]
    assert (
        logged[0].width > 200 and logged[0].height > 100 and logged[0].encoded_image_string[:4] == b"\x89PNG"
    )


def test_callback_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="log_maps_every_n_epochs=0 turns the maps off"):
        LogInteractionMaps(every_n_epochs=0)
