"""TinyImageNet from an extracted folder (fixture in tmp_path), and clear errors on bad annotation files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from lfi.data.tinyimagenet import TinyImageNet

WNIDS = ("n001", "n002")


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buf, format="JPEG")  # grey: must come out RGB
    return buf.getvalue()


@pytest.fixture
def tin_root(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("n001\tfirst thing\nn002\tsecond thing\n")
    for w in WNIDS:
        (root / "train" / w / "images").mkdir(parents=True)
        lines = []
        for i in range(3):
            (root / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(jpeg())
            lines.append(f"{w}_{i}.JPEG\t1\t2\t30\t40")
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(lines) + "\n")
    (root / "val" / "images" / "val_0.JPEG").write_bytes(jpeg())
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn002\t0\t0\t63\t63\n")
    return tmp_path


def test_folder_train_and_val(tin_root: Path) -> None:
    train = TinyImageNet(tin_root, "train")
    assert (
        len(train) == 6
        and train.labels == [0, 0, 0, 1, 1, 1]
        and train.classes == ["first thing", "second thing"]
    )
    s = train[4]
    assert s["relpath"] == "train/n002/images/n002_1.JPEG" and s["image"].shape == (3, 64, 64)
    assert s["boxes"].tolist() == [[1.0, 2.0, 31.0, 41.0]]
    val = TinyImageNet(tin_root / "tiny-imagenet-200", "val")
    assert val[0]["label"] == 1 and val[0]["boxes"].tolist() == [[0.0, 0.0, 64.0, 64.0]]


def test_bad_annotation_line_names_file_and_line(tin_root: Path) -> None:
    (tin_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn002\t0\t0\n")
    with pytest.raises(ValueError, match=r"val_annotations\.txt:1: expected 6 fields"):
        TinyImageNet(tin_root, "val")


def test_unknown_wnid_and_missing_box(tin_root: Path) -> None:
    root = tin_root / "tiny-imagenet-200"
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn999\t0\t0\t63\t63\n")
    with pytest.raises(ValueError, match="n999.*not in wnids.txt"):
        TinyImageNet(tin_root, "val")
    (root / "train" / "n001" / "n001_boxes.txt").write_text("n001_0.JPEG\t1\t2\t30\t40\n")
    with pytest.raises(ValueError, match=r"no box for train/n001/images/n001_[12]\.JPEG"):
        TinyImageNet(tin_root, "train")


def test_bad_split_and_undecodable_image(tin_root: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        TinyImageNet(tin_root, "test")
    (tin_root / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"val_0\.JPEG: cannot decode"):
        TinyImageNet(tin_root, "val")[0]


def test_samples_carry_their_wnid(tin_root: Path) -> None:
    from lfi.data import build_dataset

    train = build_dataset("tinyimagenet", tin_root, "train")
    assert [train[i]["wnid"] for i in (0, 5)] == ["n001", "n002"]
