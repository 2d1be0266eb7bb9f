"""Interaction maps in TensorBoard while training: a Lightning callback for `lfi.train.engine.train`.

    train(cfg, callbacks=[LogInteractionMaps(every_n_epochs=cfg.trainer.log_maps_every_n_epochs)])

It lives in the show stage (figures) and is handed to the engine by the command line, since `lfi.train` may
not import `lfi.show`.

At the end of a validation epoch the callback runs a fixed batch (the first `num_images` images of the first
validation batch it saw, so epochs are comparable) through the student and logs the Fig. 5 grid of their
class-token maps as trained (`lfi.maps.attention_to_grid`), averaged over the alignment layers, under the tag
``interaction_maps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lfi.data.pipelines import IMAGENET_MEAN, IMAGENET_STD
from lfi.evaluate.maps import student_maps
from lfi.models import InteractionViT
from lfi.show.maps import interaction_grid

TAG = "interaction_maps"


class LogInteractionMaps(L.Callback):
    """Logs the maps of a fixed validation batch as a figure to every TensorBoard logger of the trainer.

    every_n_epochs: log at validation epochs 0, n, 2n, ...; num_images: rows of the figure.
    mean / std: the normalisation of the batches, undone for display. The student is the module's `.model`
    (`LfiModule`); a detector (no class token to draw) is skipped, as is a trainer without a
    TensorBoardLogger. Runs on global rank 0 only.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 4,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(
                f"LogInteractionMaps: every_n_epochs and num_images must be >= 1, got {every_n_epochs} and "
                f"{num_images} (trainer.log_maps_every_n_epochs=0 turns the maps off)"
            )
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.images: torch.Tensor | None = None

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self.images is None and not trainer.sanity_checking:
            self.images = batch["image"][: self.num_images].detach().cpu().clone()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.images is None or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        model = pl_module.model
        if not isinstance(model, InteractionViT):
            return
        was_training = model.training
        model.eval()
        # the weights' dtype, not the batch's: under precision bf16-true the student holds bf16 weights
        x = self.images.to(pl_module.device, next(model.parameters()).dtype)
        maps = student_maps(model, x, layers=model.align_layers)
        model.train(was_training)
        shown = (self.images * self.std + self.mean).clamp(0, 1)
        per_image = [{name: m[i] for name, m in maps.items()} for i in range(len(shown))]
        title = f"epoch {trainer.current_epoch}: class-token maps, mean over alignment layers {model.align_layers}"
        fig = interaction_grid(list(shown), per_image, title=title)
        for logger in loggers:
            logger.experiment.add_figure(TAG, fig, global_step=trainer.global_step, close=False)
