"""LogInteractionMaps writes the maps as an image summary that TensorBoard reads back."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lfi import create_vit, interactionize
from lfi.show.tensorboard import TAG, LogInteractionMaps


class _Tiny(L.LightningModule):
    """A LightningModule holding an I-ViT as `.model`, like lfi.train.module.LfiModule."""

    def __init__(self) -> None:
        super().__init__()
        vit = create_vit("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=24, num_heads=2,
                         num_classes=3)  # fmt: skip
        self.model = interactionize(vit, freeze_backbone=False)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.model(batch["image"]), batch["label"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/task", torch.nn.functional.cross_entropy(self.model(batch["image"]), batch["label"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    samples = [{"image": torch.randn(3, 32, 32, generator=g), "label": i % 3} for i in range(6)]
    return DataLoader(samples, batch_size=3)


def test_callback_logs_an_image_summary_per_validation_epoch(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = L.Trainer(
        max_epochs=2, logger=logger, callbacks=[LogInteractionMaps(every_n_epochs=1, num_images=2)],
        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=1,
    )  # fmt: skip
    trainer.fit(_Tiny(), _loader(), _loader())
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert TAG in events.Tags()["images"]
    logged = events.Images(TAG)
    assert len(logged) == 2  # one per epoch; the sanity check logs nothing
    assert (
        logged[0].width > 200 and logged[0].height > 100 and logged[0].encoded_image_string[:4] == b"\x89PNG"
    )


def test_callback_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_epochs"):
        LogInteractionMaps(every_n_epochs=0)
