"""lfi.metrics.coco equals pycocotools run directly on the same predictions."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from lfi.metrics.coco import STAT_NAMES, CocoEvaluator, coco_evaluate, coco_from_dataset, to_coco_results


def _direct(gt, predictions, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(predictions), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


def _perturbed(gt, seed=0):
    """Ground truth as predictions, boxes jittered, some dropped, some false positives, random scores."""
    g = np.random.default_rng(seed)
    preds = []
    for ann in gt.dataset["annotations"]:
        if ann.get("iscrowd", 0) or g.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        jitter = g.normal(0, 0.08, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        preds.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
                      "score": float(g.random())})  # fmt: skip
        if g.random() < 0.3:
            preds.append({**preds[-1], "category_id": 1 if ann["category_id"] != 1 else 2,
                          "score": float(g.random())})  # fmt: skip
    return preds


@pytest.fixture
def coco_val(shared_data):
    from lfi.data.coco import CocoDetection

    return CocoDetection(shared_data / "coco", "val")


@pytest.mark.data
def test_ground_truth_as_predictions_scores_one(coco_val):
    gt = coco_val.coco
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
             for a in gt.dataset["annotations"] if not a.get("iscrowd", 0)]  # fmt: skip
    metrics = coco_evaluate(gt, preds, "bbox")
    assert set(metrics) == set(STAT_NAMES)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


@pytest.mark.data
def test_bbox_metrics_equal_direct_cocoeval(coco_val):
    gt = coco_val.coco
    preds = _perturbed(gt)
    ours = coco_evaluate(gt, preds, "bbox")
    direct = _direct(gt, preds, "bbox")
    assert list(ours.values()) == pytest.approx(list(direct), abs=0)
    assert 0.2 < ours["mAP"] < 0.95  # the perturbation matters, the comparison is not trivial


@pytest.mark.data
def test_segm_metrics_equal_direct_cocoeval(shared_data):
    from lfi.data.coco import CocoDetection

    ds = CocoDetection(shared_data / "coco", "val", return_masks=True)
    evaluator = CocoEvaluator(ds.coco, ("bbox", "segm"))
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        s = ds[i]
        masks = s["masks"].bool()
        eroded = masks & (torch.rand(masks.shape, generator=g) > 0.2)  # lose 20% of pixels
        preds = to_coco_results(s["image_id"], s["boxes"], torch.rand(len(masks), generator=g), s["labels"],
                                ds.coco_ids, eroded)  # fmt: skip
        evaluator.update(preds, [s["image_id"]])
    ours = evaluator.compute()
    ids = sorted(evaluator.image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(ds.coco, ds.coco.loadRes(evaluator.predictions), "segm")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["AP_mask"] == pytest.approx(ev.stats[0], abs=0)
    assert ours["AP_mask75"] == pytest.approx(ev.stats[2], abs=0)
    assert 0.0 < ours["AP_mask"] < 1.0 and ours["mAP"] > ours["AP_mask"]


def test_empty_predictions_and_bad_input():
    gt = coco_from_dataset({
        "images": [{"id": 1, "height": 10, "width": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "c"}],
    })  # fmt: skip
    assert coco_evaluate(gt, [], "bbox")["mAP"] == 0.0
    with pytest.raises(ValueError, match="image ids"):
        coco_evaluate(gt, [{"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="iou_type"):
        coco_evaluate(gt, [], "keypoints")
    with pytest.raises(ValueError, match="label"):
        to_coco_results(1, torch.zeros(1, 4), torch.ones(1), torch.tensor([4]), [3])
