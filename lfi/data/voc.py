"""Pascal VOC detection in its XML layout (VOC2007 / VOC2012), as COCO-style detection samples.

Layout (the year folder, e.g. ``VOCdevkit/VOC2007``): ``ImageSets/Main/<split>.txt`` (one image id a line),
``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg``. A sample has the fields of `lfi.data.coco`:
image, boxes (XYXY absolute), labels (K,) in `VOC_CLASSES` order, iscrowd (K,) = VOC's `difficult` flag (so
COCOeval ignores difficult objects, as VOC evaluation does), image_id (index in the split), relpath, key.

VOC boxes are 1-based inclusive pixel indices; they become continuous XYXY ``[xmin - 1, ymin - 1, xmax,
ymax]`` so that a box covers exactly the pixels it names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torch.utils.data import Dataset

from lfi.data.base import decode_rgb, make_boxes
from lfi.data.keys import image_key
from lfi.data.source import FileSource

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _find_year_folder(root: Path, year: str) -> Path:
    for folder in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (folder / "Annotations").is_dir():
            return folder
    raise FileNotFoundError(
        f"{root}: no VOC{year} folder with Annotations/ (expected VOCdevkit/VOC{year}/...)"
    )


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{where}: missing <{tag}>")
    return child.text.strip()


def parse_voc_xml(xml: str, where: str) -> dict:
    """One annotation file -> {"filename", "size": (H, W), "objects": [(name, (x0, y0, x1, y1), difficult)]}."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ValueError(f"{where}: not valid XML ({e})") from e
    size = root.find("size")
    if size is None:
        raise ValueError(f"{where}: missing <size>")
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", where)
        if name not in VOC_CLASSES:
            raise ValueError(f"{where}: object class {name!r} is not a VOC class")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{where}: object {name!r} has no <bndbox>")
        try:
            x0, y0, x1, y1 = (float(_text(box, t, where)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            raise ValueError(f"{where}: object {name!r}: box coordinates must be numbers ({e})") from e
        difficult = obj.find("difficult")
        is_difficult = difficult is not None and (difficult.text or "0").strip() == "1"
        objects.append((name, (x0 - 1.0, y0 - 1.0, x1, y1), is_difficult))
    height, width = int(_text(size, "height", where)), int(_text(size, "width", where))
    return {"filename": _text(root, "filename", where), "size": (height, width), "objects": objects}


class VOCDetection(Dataset):
    """Pascal VOC `split` ('train', 'val', 'trainval', 'test') of `year` under `root` (see module doc)."""

    classes = list(VOC_CLASSES)

    def __init__(self, root: Path | str, split: str = "trainval", year: str = "2007") -> None:
        folder = _find_year_folder(Path(root), year)
        self.source = FileSource(folder=folder)
        list_rel = f"ImageSets/Main/{split}.txt"
        if not self.source.exists(list_rel):
            raise FileNotFoundError(f"{folder}: no {list_rel} (split {split!r})")
        self.ids = [line.strip() for line in self.source.read_text(list_rel).splitlines() if line.strip()]
        if not self.ids:
            raise ValueError(f"{folder}/{list_rel}: no image ids")
        self.split = split

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        xml_rel = f"Annotations/{self.ids[index]}.xml"
        ann = parse_voc_xml(self.source.read_text(xml_rel), f"{self.source.describe()}:{xml_rel}")
        relpath = f"JPEGImages/{ann['filename']}"
        data = self.source.read(relpath)
        image = decode_rgb(data, f"{self.source.describe()}:{relpath}")
        h, w = image.shape[-2:]
        if ann["size"] != (h, w):
            raise ValueError(
                f"{xml_rel}: <size> says {ann['size'][0]}x{ann['size'][1]} (HxW), image is {h}x{w}"
            )
        boxes = torch.tensor([o[1] for o in ann["objects"]], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return {
            "image": image,
            "boxes": make_boxes(boxes, h, w),
            "labels": torch.tensor([VOC_CLASSES.index(o[0]) for o in ann["objects"]], dtype=torch.int64),
            "iscrowd": torch.tensor([int(o[2]) for o in ann["objects"]], dtype=torch.int64),
            "image_id": index,
            "relpath": relpath,
            "key": image_key(relpath, data),
        }
