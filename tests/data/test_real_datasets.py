"""Each dataset on the real data in ../shared/data (skipped where absent): sizes, labels, boxes, masks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from lfi.data import build_dataset, ratio_subset
from lfi.data.coco import CocoDetection
from lfi.data.pacs import DOMAINS, PACS
from lfi.data.tinyimagenet import TinyImageNet

pytestmark = pytest.mark.data


def check_classification_sample(s: dict, ds, canvas: tuple[int, int] | None = None) -> None:
    assert isinstance(s["image"], tv_tensors.Image) and s["image"].dtype == torch.uint8
    assert s["image"].shape[0] == 3
    h, w = s["image"].shape[-2:]
    if canvas:
        assert (h, w) == canvas
    assert 0 <= s["label"] < len(ds.classes) and s["class_name"] == ds.classes[s["label"]]
    b = s["boxes"]
    assert isinstance(b, tv_tensors.BoundingBoxes) and tuple(b.canvas_size) == (h, w)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert s["key"].startswith(s["relpath"] + "#")


def test_tinyimagenet_val(shared_data: Path) -> None:
    ds = TinyImageNet(shared_data, "val", return_bytes=True)
    assert len(ds) == 10_000 and len(ds.classes) == 200
    assert set(Counter(ds.labels).values()) == {50}
    s = ds[0]  # val_0.JPEG  n03444034  0 32 44 62 (inclusive pixel box)
    assert s["relpath"] == "val/images/val_0.JPEG"
    assert ds.wnids[s["label"]] == s["wnid"] == "n03444034"
    assert s["boxes"].tolist() == [[0.0, 32.0, 45.0, 63.0]]
    assert isinstance(s["data"], bytes) and s["data"][:2] == b"\xff\xd8"
    for i in (1, 4_321, 9_999):
        check_classification_sample(ds[i], ds, (64, 64))
        assert ds[i]["boxes"].shape == (1, 4)


def test_tinyimagenet_train_shards_and_ratio(shared_data: Path) -> None:
    ds = TinyImageNet(shared_data / "tiny-imagenet-200", "train")
    assert len(ds) == 40_000 and set(Counter(ds.labels).values()) == {200}
    assert ds.classes[0] == "Egyptian cat"  # words.txt name of the first wnid, n02124075
    for i in (0, 250, 39_999):  # images from different shards each carry their own shard's box
        check_classification_sample(ds[i], ds, (64, 64))
    one = ratio_subset(build_dataset("tinyimagenet", shared_data, "train").labels, 0.01, seed=3)
    assert len(one) == 400
    assert set(Counter(ds.labels[i] for i in one).values()) == {2}


def test_pacs_kfold_split_sizes(shared_data: Path) -> None:
    sizes = {split: {d: len(PACS(shared_data, d, split)) for d in DOMAINS} for split in ("train", "test")}
    with pytest.warns(UserWarning, match="art_painting_crossval.*outside 1..7"):  # a known erratum
        sizes["crossval"] = {d: len(PACS(shared_data, d, "crossval")) for d in DOMAINS}
    assert sizes["test"] == {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
    assert sizes["train"] == {"art_painting": 1840, "cartoon": 2107, "photo": 1499, "sketch": 3531}
    for d in DOMAINS:  # train + crossval partition the domain (= its test list)
        assert sizes["train"][d] + sizes["crossval"][d] == sizes["test"][d]
    assert sum(sizes["test"].values()) == 9_991


def test_pacs_samples_and_domain_selection(shared_data: Path) -> None:
    ds = build_dataset("pacs", shared_data / "pacs" / "PACS-112.zip", "test", domains=["photo", "sketch"])
    assert len(ds) == 1670 + 3929 and ds.classes[:2] == ["dog", "elephant"]
    sketch = next(i for i, r in enumerate(ds.records) if r.relpath.endswith(".png"))
    for i in (0, sketch, len(ds) - 1):
        s = ds[i]
        check_classification_sample(s, ds)
        assert s["boxes"].shape == (0, 4)
        assert s["class_name"] == s["relpath"].split("/")[1] and s["domain"] == s["relpath"].split("/")[0]
    assert ds[sketch]["domain"] == "sketch"  # PNG sketch decoded to 3-channel RGB


def test_coco_boxes_labels_and_masks(shared_data: Path) -> None:
    ds = CocoDetection(shared_data, "val", return_masks=True)
    assert len(ds) == 80 and len(ds.classes) == 80 and ds.classes[0] == "person"
    for i in (0, 17, 79):
        s = ds[i]
        h, w = s["image"].shape[-2:]
        k = len(s["boxes"])
        assert s["labels"].shape == (k,) and s["labels"].dtype == torch.int64
        assert ((s["labels"] >= 0) & (s["labels"] < 80)).all() and not s["iscrowd"].any()
        assert isinstance(s["masks"], tv_tensors.Mask) and s["masks"].shape == (k, h, w)
        b = s["boxes"]
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all() and (b[:, 2] > b[:, 0]).all()
        for box, mask in zip(b, s["masks"], strict=True):  # each mask lies inside its box (1 px rounding)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys) > 0
            assert (
                xs.min() >= box[0] - 1
                and xs.max() <= box[2]
                and ys.min() >= box[1] - 1
                and ys.max() <= box[3]
            )
    assert ds.coco_ids[ds[0]["labels"][0]] in ds.coco.cats


def test_coco_crowd_policy(shared_data: Path) -> None:
    drop, keep = CocoDetection(shared_data, "val"), CocoDetection(shared_data, "val", crowd="keep")
    n_drop = sum(len(drop[i]["boxes"]) for i in range(len(drop)))
    crowd = sum(int(keep[i]["iscrowd"].sum()) for i in range(len(keep)))
    assert crowd > 0 and sum(len(keep[i]["boxes"]) for i in range(len(keep))) == n_drop + crowd
