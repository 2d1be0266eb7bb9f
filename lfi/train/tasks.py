"""What differs between tasks, and nothing else: how a batch goes through the student, and how it is scored.

A task turns a batch into the outputs the criterion reads (`forward`) and feeds an evaluator (`evaluate`):
    ClassificationTask  I-ViT / ViT: outputs {"logits" (B, K), "maps" (L, B, gh, gw) or None}; top-1 / top-5
    DetectionTask       I-DETR / DETR: outputs {"loss_dict", "maps" (L, B, H, N, N) or None, "grid_mask"}; COCO AP
The engine (`lfi.train.engine`) is the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lfi.maps import normalize_map
from lfi.metrics.classification import AccuracyEvaluator


def step_losses(
    task: Any, model: nn.Module, criterion: nn.Module, batch: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """One training step's loss terms ({name: scalar}, "loss" their weighted sum): the task's forward, then the
    criterion. The engine's `training_step` and `lfi demo` both train through it."""
    return criterion(task.forward(model, batch), batch)


class ClassificationTask:
    """Image classification; the checkpoint to keep is the one of best validation top-1.

    start: the block batch["image"] enters; 0 = images, > 0 = the tokens `InteractionViT.tokens_before` made
    (a caller that computes a frozen prefix once, as `lfi demo` does).
    """

    monitor = "acc1"

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """One training pass: logits and the supervised map of every alignment layer (the class-token row)."""
        x = batch["image"]
        logits, maps = model.forward_aligned(x, start=self.start) if self.start else model.forward_aligned(x)
        return {"logits": logits, "maps": torch.stack(list(maps.values())) if maps else None}

    def evaluator(self) -> AccuracyEvaluator:
        return AccuracyEvaluator()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: dict[str, Any], evaluator: AccuracyEvaluator) -> None:
        evaluator.update(model(batch["image"]), batch["label"])


class DetectionTask:
    """Detection or instance segmentation with an (I-)DETR; the checkpoint to keep is the one of best mAP.

    processor: the HF image processor matching the architecture's loss (post-processing); coco_gt: the
    ground truth of the evaluated set; category_ids: COCO id of each label (None = the label); masks: score
    instance masks too.
    """

    monitor = "mAP"

    def __init__(self, processor: Any, coco_gt: Any, category_ids: list[int] | None, masks: bool) -> None:
        self.processor, self.coco_gt, self.category_ids, self.masks = processor, coco_gt, category_ids, masks

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        pixels = batch["image"]
        out = model.forward_aligned(
            pixel_values=pixels,
            pixel_mask=batch["pixel_mask"].long(),
            labels=detr_labels(batch["targets"], pixels.shape[-2:]),
        )
        name = model.config.supervised_map
        maps = torch.stack([m[name] for m in out.maps.values()]) if out.maps else None
        return {"loss_dict": out.outputs.loss_dict, "maps": maps, "grid_mask": out.grid_mask}

    def evaluator(self) -> Any:
        from lfi.metrics.coco import CocoEvaluator  # pycocotools: only where COCO is scored

        return CocoEvaluator(self.coco_gt, ("bbox", "segm") if self.masks else ("bbox",))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: dict[str, Any], evaluator: Any) -> None:
        from lfi.metrics.coco import detr_predictions

        pixels = batch["image"]
        outputs = model(pixel_values=pixels, pixel_mask=batch["pixel_mask"].long())
        targets = batch["targets"]
        ids = [int(t["image_id"]) for t in targets]
        predictions = detr_predictions(
            outputs, self.processor, ids, [t["orig_size"] for t in targets],
            input_sizes=[t["size"] for t in targets], padded_size=tuple(pixels.shape[-2:]),
            category_ids=self.category_ids,
        )  # fmt: skip
        evaluator.update(predictions, ids)


def detr_labels(targets: Sequence[dict], padded: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """collate_detection targets -> HF DETR `labels`.

    class_labels (K,) int64; boxes (K, 4) cxcywh normalised by the image's unpadded size (as DETR does; the
    sine position embedding is normalised over the unpadded region too); masks (K, Hpad, Wpad) float,
    zero-padded to the batch's padded size, where the predicted masks live (only when targets carry masks).
    """
    out = []
    for t in targets:
        h, w = t["size"]
        xyxy = t["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=xyxy.device)
        cxcywh = torch.stack(
            [(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2] - xyxy[:, 0],
             xyxy[:, 3] - xyxy[:, 1]], dim=1,
        ) / scale  # fmt: skip
        label = {
            "class_labels": torch.as_tensor(t["labels"], dtype=torch.int64, device=xyxy.device),
            "boxes": cxcywh,
        }
        if "masks" in t:
            m = t["masks"].as_subclass(torch.Tensor).float()
            label["masks"] = F.pad(m, (0, padded[1] - m.shape[-1], 0, padded[0] - m.shape[-2]))
        out.append(label)
    return out


def oracle_maps(targets: Sequence[dict], source: str = "boxes", stride: int = 8) -> list[torch.Tensor]:
    """The oracle teacher's dense C_VLM (Eq. 12 with the ground truth as the objects, back = 0) of each
    transformed image, on a (H // stride, W // stride) grid over its unpadded region: (h_i, w_i) each."""
    from lfi.extract.oracle import OracleTeacher

    maps = []
    for t in targets:
        h, w = t["size"]
        teacher = OracleTeacher(grid=(max(1, h // stride), max(1, w // stride)), source=source)
        sample = {
            "image": torch.empty(3, h, w, dtype=torch.uint8),
            "boxes": t["boxes"].as_subclass(torch.Tensor).cpu(),
        }
        if source == "masks":
            sample["masks"] = t["masks"].as_subclass(torch.Tensor).cpu()
        maps.append(normalize_map(teacher.fore_map(sample)))
    return maps


def stored_maps(batch: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The store's maps of a batch of `WithInteractionMaps(..., grid=None)` samples, for `DenseAlignment`:
    each teacher map (h, w) as stored (zeroed where the teacher's map was invalid) and (B, 4) the window of
    each that its transformed image spans."""
    if "map" not in batch:
        raise KeyError(
            "the batch has no 'map': the student is aligned to C_VLM but no interaction store is read"
        )
    maps = [
        m if bool(valid) else torch.zeros_like(m)
        for m, valid in zip(batch["map"], batch["map_valid"], strict=True)
    ]
    return maps, batch["map_box"]
