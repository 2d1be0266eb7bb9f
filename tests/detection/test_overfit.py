"""End to end on real COCO images: a tiny I-DETR, trained with DETR's loss + dense oracle alignment, overfits
a handful of images and reaches a high COCOeval AP on them (proves data -> targets -> loss -> eval wiring)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from lfi.train.detection import (
    DetectionTask,
    build_model,
    build_processor,
    evaluate_detection,
    load_detection_config,
    loader,
    train_loop,
)

STEPS = 1000


def _overfit(shared_data, task: str, images: int):
    from lfi.data.coco import CocoDetection

    torch.manual_seed(0)
    ds = CocoDetection(shared_data / "coco", "val", return_masks=task == "segmentation")
    few = [i for i, image_id in enumerate(ds.image_ids) if 1 <= len(ds.coco.imgToAnns[image_id]) <= 2][
        :images
    ]
    cfg = load_detection_config(None, [
        f"task={task}", "model.size=tiny", "model.num_queries=10", "model.dropout=0.0", "teacher.name=oracle",
        "teacher.teacher=oracle-boxes", "data.scales=[128]", "data.max_size=160", "optim.lr=1e-3",
        "optim.lr_backbone=1e-3", "optim.clip=1.0", f"optim.batch_size={images}", "optim.num_workers=0",
        f"optim.epochs={STEPS}", f"optim.lr_drop={int(STEPS * 0.7)}",
    ])  # fmt: skip
    model = build_model(
        cfg, len(ds.coco_ids)
    )  # from scratch: trainable GroupNorm backbone (backbone_norm auto)
    data = loader(Subset(ds, few), cfg, train=False)  # no augmentation: memorise the images as they are
    history = train_loop(DetectionTask(model, cfg), data, cfg.optim, torch.device("cpu"), log=lambda _: None)
    assert history[-1]["align"] < history[0]["align"]
    return evaluate_detection(model, data, ds.coco, build_processor("detr"), ds.coco_ids,
                              task == "segmentation", torch.device("cpu"))  # fmt: skip


@pytest.mark.slow
@pytest.mark.data
def test_tiny_idetr_overfits_coco_boxes(shared_data):
    """4 real images, 1000 steps (about 70 s on 2 CPU cores); measured: mAP 1.0."""
    metrics = _overfit(shared_data, "detection", images=4)
    assert metrics["AP50"] > 0.9 and metrics["mAP"] > 0.8, metrics


@pytest.mark.slow
@pytest.mark.data
def test_tiny_idetr_overfits_coco_masks(shared_data):
    """DetrForSegmentation, 2 real images, 1000 steps; measured: box mAP 0.97, AP_mask 0.80, AP_mask50 1.0."""
    metrics = _overfit(shared_data, "segmentation", images=2)
    assert metrics["AP50"] > 0.9 and metrics["AP_mask50"] > 0.9 and metrics["AP_mask"] > 0.6, metrics


@pytest.mark.data
def test_perfect_detr_outputs_score_one_through_the_pipeline(shared_data):
    """Model outputs built from the batch's own targets (logits, cxcywh boxes, mask logits at stride 4) go
    through transforms, collate, detr_labels, HF post-processing and COCOeval back to AP 1 on boxes."""
    from types import SimpleNamespace

    from lfi.data.coco import CocoDetection
    from lfi.evaluate.coco import CocoEvaluator, detr_predictions
    from lfi.train.detection_data import detr_labels

    ds = CocoDetection(shared_data / "coco", "val", return_masks=True)
    cfg = load_detection_config(None, ["task=segmentation", "model.constraint=none", "data.scales=[192]", "data.max_size=256",
                                       "optim.batch_size=4", "optim.num_workers=0"])  # fmt: skip
    batch = next(iter(loader(Subset(ds, [1, 2, 7, 8]), cfg, train=False)))
    padded = tuple(batch["image"].shape[-2:])
    labels = detr_labels(batch["targets"], padded)
    logits, boxes = torch.full((4, 10, 81), -10.0), torch.full((4, 10, 4), 0.5)
    masks = torch.full((4, 10, padded[0] // 4, padded[1] // 4), -10.0)
    for i, lab in enumerate(labels):
        k = len(lab["class_labels"])
        logits[i, torch.arange(k), lab["class_labels"]] = 10.0
        logits[i, k:, -1] = 10.0
        boxes[i, :k] = lab["boxes"]
        masks[i, :k] = torch.nn.functional.interpolate(lab["masks"][None], size=masks.shape[-2:])[0] * 20 - 10
    ids = [t["image_id"] for t in batch["targets"]]
    evaluator = CocoEvaluator(ds.coco, ("bbox", "segm"))
    preds = detr_predictions(
        SimpleNamespace(logits=logits, pred_boxes=boxes, pred_masks=masks), build_processor("detr"), ids,
        [t["orig_size"] for t in batch["targets"]], [t["size"] for t in batch["targets"]], padded, ds.coco_ids,
    )  # fmt: skip
    evaluator.update(preds, ids)
    metrics = evaluator.compute()
    assert metrics["mAP"] == pytest.approx(1.0)
    assert metrics["AP_mask50"] > 0.5  # stride-4 nearest-resampled masks lose small objects; misaligned: ~0
