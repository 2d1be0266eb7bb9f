"""The LightningModule: one student (plain ViT or any Table 3 variant of I-ViT) and its losses.

L = L_task + align_weight * L_align (Eq. 13-14, `lfi.LfiCriterion`) [+ kd.weight * L_kd for the KD baseline].
Baselines are config switches of the same module, trained by the same loop with the same budget:
  plain ViT        model.variant=vit                             (no maps read)
  result-oriented  model.variant=vit, loss.kd.weight>0           (KL on temperature-softened logits)
  attention xfer   model.variant=ic_original, freeze_backbone=False (C_VLM supervises the original queries)
  extra queries    model.variant=iq_gc                           (interaction queries, no constraint)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lfi.models import TABLE3, InteractionViT, create_vit
from lfi.train.config import Config, config_from_dict, config_to_dict
from lfi.train.distill import LogitTeacher, imagenet_indices, kd_loss
from lfi.train.losses import AlignmentLoss, LfiCriterion


def build_student(cfg: Config, num_classes: int) -> InteractionViT:
    """The timm ViT of cfg.model, converted by the Table 3 row `cfg.model.variant`."""
    m = cfg.model
    vit = create_vit(m.name, m.checkpoint, num_classes=num_classes, **m.timm_kwargs)
    ivit_cfg = replace(
        TABLE3[m.variant],
        freeze_backbone=m.freeze_backbone,
        blocks=tuple(m.blocks) if m.blocks is not None else None,
        align_layers=tuple(m.align_layers) if m.align_layers is not None else None,
        gate_hidden=m.gate_hidden,
    )
    return InteractionViT(vit, ivit_cfg)


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> min_ratio at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup  # never 0, so the first step already moves the weights
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LfiModule(L.LightningModule):
    """Trains `build_student(cfg)` on batches {image (B, 3, H, W), label (B,), [map (B, gh, gw), map_valid (B,)]}.

    cfg: a `Config` or its dict (hyper-parameters are saved as the dict, so checkpoints reload without pickle
    of lfi classes). class_wnids: the dataset's class wnids, needed only for the KD baseline.
    """

    def __init__(self, cfg: Config | dict, num_classes: int, class_wnids: list[str] | None = None) -> None:
        super().__init__()
        cfg_dict = config_to_dict(cfg) if isinstance(cfg, Config) else cfg
        self.save_hyperparameters({"cfg": cfg_dict, "num_classes": num_classes, "class_wnids": class_wnids})
        self.cfg = config_from_dict(cfg_dict, "checkpoint hyper-parameters")
        self.model = build_student(self.cfg, num_classes)
        loss = self.cfg.loss
        self.criterion = LfiCriterion(loss.align_weight, AlignmentLoss(loss.direction), loss.label_smoothing)
        self.kd_teacher = self._kd_teacher(class_wnids) if loss.kd.weight > 0 else None
        top5 = min(5, num_classes)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def _kd_teacher(self, class_wnids: list[str] | None) -> LogitTeacher:
        kd = self.cfg.loss.kd
        if not class_wnids:
            raise ValueError(
                "loss.kd.weight > 0 needs the dataset's class wnids (ImageNet classes), e.g. TinyImageNet"
            )
        for key in ("checkpoint", "synsets"):
            if getattr(kd, key) is None:
                raise ValueError(f"loss.kd.{key} must name a file for the KD baseline")
        return LogitTeacher(kd.model, kd.checkpoint, imagenet_indices(class_wnids, kd.synsets), kd.input_size)

    @property
    def needs_maps(self) -> bool:
        return self.model.config.supervised_map is not None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> logits (B, K)."""
        return self.model(images)

    def losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> logits (B, K) and {"task", ["align"], ["kd"], "loss"} for one batch."""
        images, labels = batch["image"], batch["label"]
        logits, student_maps = self.model.forward_aligned(images)
        teacher_maps = None
        if student_maps:
            if "map" not in batch:
                raise KeyError(
                    f"variant {self.cfg.model.variant!r} aligns to C_VLM but the batch has no 'map'"
                )
            # invalid maps are all zeros, which AlignmentLoss leaves out; enforce it whatever the source says
            teacher_maps = batch["map"] * batch["map_valid"].to(batch["map"].dtype)[:, None, None]
        out = self.criterion(logits, labels, student_maps, teacher_maps)
        if self.kd_teacher is not None:
            out["kd"] = kd_loss(logits, self.kd_teacher(images), self.cfg.loss.kd.temperature)
            out["loss"] = out["loss"] + self.cfg.loss.kd.weight * out["kd"]
        return logits, out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, out = self.losses(batch)
        bs = batch["label"].shape[0]
        for name, value in out.items():
            self.log(
                f"train/{name}",
                value,
                on_step=True,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=bs,
                sync_dist=True,
            )
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["image"])
        labels = batch["label"]
        task = nn.functional.cross_entropy(logits, labels)
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        bs = labels.shape[0]
        self.log("val/task", task, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("val/acc1", self.val_acc1, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("val/acc5", self.val_acc5, on_epoch=True, batch_size=bs)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (no decay on biases, norms, position embeddings and tokens) + per-step warm-up/cosine."""
        o = self.cfg.optim
        skip = set(getattr(self.model.vit, "no_weight_decay", lambda: set())())
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            short = name.removeprefix("vit.")
            (no_decay if p.ndim < 2 or short in skip else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = round(o.warmup_epochs * total / self.trainer.max_epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, total, warmup, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
