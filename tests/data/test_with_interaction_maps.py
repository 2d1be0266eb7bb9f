"""WithInteractionMaps over a real InteractionStore, its errors, and the two collates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from lfi.data import (
    WithInteractionMaps,
    classification_transforms,
    collate_classification,
    collate_detection,
    detection_transforms,
)
from lfi.data.keys import image_key, key_relpath
from lfi.maps import normalize_map
from lfi.store.shards import InteractionStore, Record, StoreWriter


def make_sample(i: int, hw: tuple[int, int]) -> dict:
    h, w = hw
    relpath = f"images/{i}.jpg"
    return {
        "image": tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8)),
        "label": i % 3,
        "boxes": tv_tensors.BoundingBoxes([[2.0, 3.0, w - 4.0, h - 5.0]], format="XYXY", canvas_size=hw),
        "labels": torch.tensor([i % 3]),
        "relpath": relpath,
        "key": image_key(relpath, bytes([i])),
        "data": bytes([i]),
    }


@pytest.fixture
def samples() -> list[dict]:
    return [make_sample(i, (48 + 8 * i, 64)) for i in range(4)]


@pytest.fixture
def store(tmp_path: Path, samples: list[dict]) -> InteractionStore:
    with StoreWriter(tmp_path / "store", {"teacher": "test", "grid": [7, 7]}) as writer:
        for i, s in enumerate(samples):
            valid = i != 2  # sample 2: the teacher found no foreground
            m = normalize_map(torch.rand(7, 7)) if valid else torch.zeros(7, 7)
            writer.add(Record(s["key"], m, tuple(s["image"].shape[-2:]), valid, not valid))
    return InteractionStore(tmp_path / "store")


def test_classification_batch_from_store(samples: list[dict], store: InteractionStore) -> None:
    ds = WithInteractionMaps(samples, store, classification_transforms(train=True, size=32), grid=(4, 4))
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_classification)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [0, 1, 2, 0]
    assert batch["map"].shape == (4, 4, 4) and batch["map_valid"].tolist() == [True, True, False, True]
    sums = batch["map"].sum(dim=(1, 2))
    torch.testing.assert_close(sums, batch["map_valid"].float())
    assert "data" not in batch and batch["key"] == [s["key"] for s in samples]


def test_eval_pipeline_keeps_whole_map(samples: list[dict], store: InteractionStore) -> None:
    ds = WithInteractionMaps(samples, store, classification_transforms(train=False, size=32), grid=(4, 4))
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and s["map_valid"]


def test_detection_batch_pads_images_and_maps(samples: list[dict], store: InteractionStore) -> None:
    transforms = detection_transforms(train=True, scales=(40, 48), max_size=80)
    ds = WithInteractionMaps(samples, store, transforms, grid=None)
    batch = collate_detection([ds[i] for i in range(4)])
    b, _, h, w = batch["image"].shape
    assert b == 4 and batch["pixel_mask"].shape == (4, h, w)
    assert batch["map"].shape == (4, 7, 7) and batch["map_box"].shape == (4, 4)  # the teacher's own grid
    flipped = batch["map_box"][:, 0] > batch["map_box"][:, 2]  # a flip mirrors the window, x0 > x1
    assert (batch["map_box"][:, [1, 3]] == torch.tensor([0.0, 7.0])).all()
    assert (
        batch["map_box"][:, [0, 2]]
        == torch.where(flipped[:, None], torch.tensor([7.0, 0.0]), torch.tensor([0.0, 7.0]))
    ).all()
    for i, t in enumerate(batch["targets"]):
        assert batch["pixel_mask"][i].sum() == t["size"][0] * t["size"][1]
        assert t["boxes"].shape == (1, 4) and t["labels"].tolist() == [i % 3]
    assert batch["map_valid"].tolist() == [True, True, False, True]


def test_missing_key_names_key_and_store(samples: list[dict], store: InteractionStore) -> None:
    stranger = make_sample(9, (32, 32))
    ds = WithInteractionMaps([stranger], store, None, grid=(4, 4))
    with pytest.raises(KeyError, match=r"images/9\.jpg#.*store .*store"):
        ds[0]


def test_plain_mapping_store_and_no_transforms(samples: list[dict]) -> None:
    maps = {samples[0]["key"]: normalize_map(torch.rand(5, 5))}
    s = WithInteractionMaps(samples[:1], maps, None, grid=(6, 8))[0]
    assert s["map"].shape == (6, 8) and s["map_valid"]
    with pytest.raises(KeyError, match="no interaction map for image key"):
        WithInteractionMaps(samples[1:], maps, None, grid=(6, 8))[0]


def test_key_relpath_gives_back_the_path_a_key_was_made_from() -> None:
    for rel in ("n01443537/images/n01443537_0.JPEG", "photo/dog/a#1.png", "x.png"):
        key = image_key(rel, b"some bytes")
        assert key != rel and key_relpath(key) == rel
