"""VLCS (DomainBed layout) on a small fixture written into tmp_path, as a folder and as a zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from lfi.data import build_dataset
from lfi.data.domainbed import VLCS, VLCS_DOMAINS

CLASSES = ("bird", "car", "chair", "dog", "person")


def write_vlcs(root: Path, per_class: int = 3) -> Path:
    """root/VLCS/<domain>/<class>/<i>.jpg (SUN's persons as grey PNGs, to test RGB conversion)."""
    g = torch.Generator().manual_seed(0)
    for d in VLCS_DOMAINS:
        for c in CLASSES:
            folder = root / "VLCS" / d / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                if d == "SUN" and c == "person":
                    img = torch.randint(0, 256, (1, 20, 30), dtype=torch.uint8, generator=g)
                    (folder / f"{i}.png").write_bytes(encode(img, "PNG"))
                else:
                    img = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=g)
                    (folder / f"{i}.jpg").write_bytes(encode(img, "JPEG"))
            (folder / "Thumbs.db").write_bytes(b"not an image")
    return root


def encode(pixels: torch.Tensor, fmt: str) -> bytes:
    """(C, H, W) uint8 -> image file bytes (C = 1: grey)."""
    array = pixels.permute(1, 2, 0).squeeze(-1).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def vlcs_root(tmp_path: Path) -> Path:
    return write_vlcs(tmp_path / "data")


def test_vlcs_folder_domains_labels_and_samples(vlcs_root: Path) -> None:
    ds = VLCS(vlcs_root, domains=["PASCAL", "SUN"])
    assert len(ds) == 2 * 5 * 3
    assert ds.classes == list(CLASSES)
    assert {ds.classes[y] for y in ds.labels} == set(CLASSES)
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].dtype == torch.uint8 and s["image"].shape[0] == 3
        assert s["class_name"] == s["relpath"].split("/")[1] == CLASSES[s["label"]]
        assert s["domain"] == s["relpath"].split("/")[0]
        assert s["boxes"].shape == (0, 4)
        assert s["key"].startswith(s["relpath"] + "#")


def test_vlcs_labels_do_not_depend_on_domain_selection(vlcs_root: Path) -> None:
    one = VLCS(vlcs_root, domains="CALTECH")
    assert one.classes == VLCS(vlcs_root).classes
    assert len(VLCS(vlcs_root)) == 4 * 5 * 3


def test_vlcs_zip_reads_like_folder(vlcs_root: Path, tmp_path: Path) -> None:
    archive = tmp_path / "VLCS.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted((vlcs_root / "VLCS").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(vlcs_root).as_posix())
    from_zip, from_folder = VLCS(archive, domains="LABELME"), VLCS(vlcs_root, domains="LABELME")
    assert [r.relpath for r in from_zip.records] == [r.relpath for r in from_folder.records]
    assert from_zip[4]["key"] == from_folder[4]["key"]
    assert torch.equal(from_zip[4]["image"], from_folder[4]["image"])


def test_vlcs_test_split_is_the_whole_domain(vlcs_root: Path) -> None:
    test = build_dataset("vlcs", vlcs_root, "test", domains=["SUN"])
    assert [r.relpath for r in test.records] == [
        r.relpath for r in VLCS(vlcs_root, "SUN", split="all").records
    ]


def test_vlcs_holdout_split_partitions_each_class(vlcs_root: Path) -> None:
    train = build_dataset("vlcs", vlcs_root, "train", domains=["SUN"], holdout=0.34)
    val = build_dataset("vlcs", vlcs_root, "val", domains=["SUN"], holdout=0.34)
    assert len(train) + len(val) == 15 and len(val) == 5
    assert {r.relpath for r in train.records}.isdisjoint(r.relpath for r in val.records)


def test_vlcs_errors_name_the_problem(vlcs_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown or no domains"):
        VLCS(vlcs_root, domains=["VOC"])
    with pytest.raises(ValueError, match="split must be one of"):
        VLCS(vlcs_root, split="holdout")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither zips"):
        VLCS(empty)
    for p in (vlcs_root / "VLCS" / "SUN").rglob("*.*"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no images in SUN/"):
        VLCS(vlcs_root, domains="SUN")
