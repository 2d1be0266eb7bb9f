"""Pascal VOC XML layout reader on a tiny fixture written here."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import encode_jpeg

from lfi.data.voc import VOC_CLASSES, VOCDetection

XML = """<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>32</xmax><ymax>24</ymax></bndbox></object>
</annotation>"""


def _write(root, name="000001", h=24, w=32, xml=None):
    year = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    (year / "Annotations" / f"{name}.xml").write_text(xml or XML.format(name=name, h=h, w=w))
    (year / "JPEGImages" / f"{name}.jpg").write_bytes(
        encode_jpeg(torch.zeros(3, h, w, dtype=torch.uint8)).numpy().tobytes()
    )
    (year / "ImageSets/Main/trainval.txt").write_text(f"{name}\n")


def test_reads_boxes_labels_difficult(tmp_path):
    _write(tmp_path)
    ds = VOCDetection(tmp_path, "trainval")
    s = ds[0]
    assert len(ds) == 1 and s["image"].shape == (3, 24, 32)
    assert s["boxes"].tolist() == [[1.0, 2.0, 20.0, 15.0], [0.0, 0.0, 32.0, 24.0]]
    assert s["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert s["iscrowd"].tolist() == [0, 1] and s["image_id"] == 0 and s["relpath"] == "JPEGImages/000001.jpg"


def test_clear_errors(tmp_path):
    _write(tmp_path, xml=XML.format(name="000001", h=24, w=32).replace("dog", "dragon"))
    with pytest.raises(ValueError, match="dragon"):
        VOCDetection(tmp_path)[0]
    _write(tmp_path, xml=XML.format(name="000001", h=99, w=32))
    with pytest.raises(ValueError, match="size"):
        VOCDetection(tmp_path)[0]
    with pytest.raises(FileNotFoundError, match="test"):
        VOCDetection(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCDetection(tmp_path, year="2012")
