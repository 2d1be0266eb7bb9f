"""COCO detection / instance-segmentation metrics through pycocotools' COCOeval (never hand-written AP).

Predictions are COCO result dicts ({"image_id", "category_id", "score", "bbox": [x, y, w, h]} and, for
masks, "segmentation": RLE), as `COCO.loadRes` reads them. `detr_predictions` turns an HF DETR output into
them: boxes through the image processor's `post_process_object_detection` (all queries, threshold 0, as
DETR is evaluated), masks as DETR's PostProcessSegm does (per-query sigmoid > 0.5 on the unpadded region,
resized to the original image; HF's instance post-processing merges queries into one non-overlapping
segment map, which is a panoptic-style output and not what COCO instance AP_mask scores).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IouType = Literal["bbox", "segm"]

#: Names of COCOeval.stats[0:6] (the 12-number summary continues with AR, not reported here).
STAT_NAMES = ("mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
#: The mask metrics carry the paper's AP_mask prefix: AP_mask, AP_mask50, ...
MASK_NAMES = ("AP_mask", "AP_mask50", "AP_mask75", "AP_mask_S", "AP_mask_M", "AP_mask_L")


def coco_from_dataset(dataset: dict[str, Any]) -> COCO:
    """A pycocotools COCO object from an in-memory instances dict (images, annotations, categories)."""
    for field in ("images", "annotations", "categories"):
        if field not in dataset:
            raise ValueError(f"COCO ground truth: missing top-level field {field!r}")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _load_results(gt: COCO, predictions: list[dict]) -> COCO:
    """COCO.loadRes, plus the empty case (loadRes indexes predictions[0])."""
    if predictions:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(predictions)
    return coco_from_dataset(
        {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    )


def coco_evaluate(
    gt: COCO, predictions: list[dict], iou_type: IouType = "bbox", image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """Run COCOeval(gt, predictions, iou_type) over `image_ids` (default: every gt image) -> the AP summary.

    Returns {"mAP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"} for bbox, {"AP_mask", ...} for segm, as
    COCOeval.stats in [0, 1] (-1 where an area range has no ground truth, as COCOeval reports it).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    known = set(gt.getImgIds())
    unknown = {p["image_id"] for p in predictions} - known
    if unknown:
        raise ValueError(f"predictions for image ids not in the ground truth: {sorted(unknown)[:5]}")
    if iou_type == "segm" and any("segmentation" not in p for p in predictions):
        raise ValueError("iou_type='segm' needs a 'segmentation' (RLE) in every prediction")
    evaluator = COCOeval(gt, _load_results(gt, predictions), iou_type)
    evaluator.params.imgIds = sorted(image_ids) if image_ids is not None else sorted(known)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and summary table
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = STAT_NAMES if iou_type == "bbox" else MASK_NAMES
    return {name: float(v) for name, v in zip(names, evaluator.stats[:6], strict=True)}


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """(K, H, W) bool/uint8 -> K COCO RLEs with str counts (json-serialisable)."""
    arr = np.asfortranarray(masks.to(torch.uint8).cpu().numpy().transpose(1, 2, 0))
    rles = mask_utils.encode(arr) if len(masks) else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def to_coco_results(
    image_id: int,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    category_ids: Sequence[int],
    masks: torch.Tensor | None = None,
) -> list[dict]:
    """One image's detections -> COCO result dicts.

    boxes (K, 4) XYXY absolute pixels of the original image; scores (K,); labels (K,) contiguous 0..C-1,
    mapped to COCO ids through `category_ids[label]`; masks (K, H, W) bool at the original size, optional.
    """
    xywh = boxes.detach().float().cpu().clone()
    xywh[:, 2:] -= xywh[:, :2]
    rles = encode_masks(masks) if masks is not None else None
    results = []
    for i, (box, score, label) in enumerate(
        zip(xywh.tolist(), scores.tolist(), labels.tolist(), strict=True)
    ):
        if not 0 <= label < len(category_ids):
            raise ValueError(f"image {image_id}: predicted label {label} outside 0..{len(category_ids) - 1}")
        res = {
            "image_id": int(image_id),
            "category_id": int(category_ids[label]),
            "bbox": box,
            "score": score,
        }
        if rles is not None:
            res["segmentation"] = rles[i]
        results.append(res)
    return results


def detr_predictions(
    outputs: Any,
    processor: Any,
    image_ids: Sequence[int],
    orig_sizes: Sequence[tuple[int, int]],
    input_sizes: Sequence[tuple[int, int]] | None = None,
    padded_size: tuple[int, int] | None = None,
    category_ids: Sequence[int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """An HF DETR output for a batch -> COCO result dicts (every query, as DETR is evaluated).

    outputs: logits (B, Q, C+1), pred_boxes (B, Q, 4) cxcywh normalised to the unpadded image, optional
    pred_masks (B, Q, h, w) over the padded input at stride 4. processor: an HF DETR image processor
    (its post_process_object_detection). orig_sizes: (H, W) of each original image; input_sizes: (H, W) of
    each unpadded network input and padded_size the batch's padded (H, W) (both needed for masks, to drop the
    padding). category_ids: COCO id of each
    contiguous label (default: the label itself).
    """
    results = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=list(orig_sizes))
    masks = getattr(outputs, "pred_masks", None)
    if masks is not None and (input_sizes is None or padded_size is None):
        raise ValueError(
            "detr_predictions: masks need input_sizes and padded_size (the network input's (H, W))"
        )
    out = []
    for b, res in enumerate(results):
        cats = category_ids if category_ids is not None else range(outputs.logits.shape[-1] - 1)
        image_masks = None
        if masks is not None:
            image_masks = _masks_to_image(masks[b], padded_size, input_sizes[b], orig_sizes[b])
            image_masks = image_masks > mask_threshold
        out.extend(
            to_coco_results(image_ids[b], res["boxes"], res["scores"], res["labels"], cats, image_masks)
        )
    return out


def _masks_to_image(
    logits: torch.Tensor, padded: tuple[int, int], input_size: tuple[int, int], orig_size: tuple[int, int]
) -> torch.Tensor:
    """(Q, h, w) mask logits over the padded input -> (Q, H, W) probabilities over the original image."""
    up = F.interpolate(logits[None].float(), size=padded, mode="bilinear", align_corners=False)
    up = up[..., : input_size[0], : input_size[1]]
    return F.interpolate(up, size=tuple(orig_size), mode="bilinear", align_corners=False)[0].sigmoid()


class CocoEvaluator:
    """Accumulates COCO result dicts over batches; `compute()` runs COCOeval for each iou type.

    gt: the ground truth (COCO); iou_types: ("bbox",) or ("bbox", "segm").
    """

    def __init__(self, gt: COCO, iou_types: Sequence[IouType] = ("bbox",)) -> None:
        self.gt, self.iou_types = gt, tuple(iou_types)
        self.predictions: list[dict] = []
        self.image_ids: set[int] = set()

    def update(self, predictions: list[dict], image_ids: Sequence[int]) -> None:
        """Add a batch's predictions; image_ids: every image evaluated in it (even those without detections)."""
        self.predictions.extend(predictions)
        self.image_ids.update(int(i) for i in image_ids)

    def compute(self, sync: bool = True) -> dict[str, float]:
        """{"mAP", "AP50", ..., "AP_mask", ...} over the images seen so far: by every process under DDP when
        `sync`, else by this one."""
        if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (self.predictions, self.image_ids))
            self.predictions = [p for preds, _ in gathered for p in preds]
            self.image_ids = set().union(*(ids for _, ids in gathered))
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            metrics.update(coco_evaluate(self.gt, self.predictions, iou_type, sorted(self.image_ids)))
        return metrics
