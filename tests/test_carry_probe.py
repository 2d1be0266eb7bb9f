"""scripts/carry_probe.py: the val zip cut to its first images, their annotation lines with them."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = "tiny-imagenet-200/val/val_annotations.txt"


def carry() -> ModuleType:
    sys.path.insert(0, str(REPO / "scripts"))  # it imports carry_pacs_human beside it
    try:
        spec = importlib.util.spec_from_file_location("carry_probe", REPO / "scripts" / "carry_probe.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return module


def val_zip(path: Path, images: int) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01\nn02\n")
        lines = "".join(f"val_{i}.JPEG\tn0{1 + i % 2}\t0\t0\t63\t63\n" for i in range(images))
        z.writestr(ANNOTATIONS, lines)
        for i in range(images):
            z.writestr(f"tiny-imagenet-200/val/images/val_{i}.JPEG", f"jpeg {i}".encode())


def test_the_val_zip_keeps_its_first_images_and_their_lines(tmp_path):
    val_zip(tmp_path / "val.zip", 12)
    carry().cut_val(tmp_path / "val.zip", tmp_path / "cut" / "val.zip", 3)
    with zipfile.ZipFile(tmp_path / "cut" / "val.zip") as z:
        names = sorted(n for n in z.namelist() if "/images/" in n)
        assert names == [f"tiny-imagenet-200/val/images/val_{i}.JPEG" for i in range(3)]
        assert [line.split("\t")[0] for line in z.read(ANNOTATIONS).decode().splitlines()] == [
            "val_0.JPEG", "val_1.JPEG", "val_2.JPEG"
        ]  # fmt: skip
        assert z.read("tiny-imagenet-200/val/images/val_2.JPEG") == b"jpeg 2"
        assert z.read("tiny-imagenet-200/wnids.txt") == b"n01\nn02\n"


def test_asking_for_more_images_than_there_are_fails(tmp_path):
    val_zip(tmp_path / "val.zip", 2)
    with pytest.raises(SystemExit, match="2 images and 2 annotation lines, expected 5"):
        carry().cut_val(tmp_path / "val.zip", tmp_path / "cut.zip", 5)
