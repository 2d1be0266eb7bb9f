"""COCO instances (boxes, polygon/RLE masks) from ``coco_tiny.zip``, a full COCO folder, or their zips.

Layout: ``annotations/instances_<split>2017.json`` and ``<split>2017/<file_name>`` (inside ``coco_tiny/`` for
the zip). A sample is a dict:
    image      tv_tensors.Image uint8 (3, H, W) RGB
    boxes      tv_tensors.BoundingBoxes XYXY absolute, canvas (H, W); shape (K, 4)
    labels     int64 (K,): contiguous labels 0..C-1, categories in ascending COCO id (`coco_ids[label]`)
    iscrowd    int64 (K,)
    masks      tv_tensors.Mask uint8 (K, H, W), only with return_masks=True
    image_id   int (the COCO image id, for pycocotools evaluation)
    relpath    e.g. 'val2017/000000532481.jpg'
    key        lfi.data.keys.image_key(relpath, data)
    data       raw bytes, only with return_bytes=True

Any COCO-format set by path: root = its annotation ``.json`` file (CVAT, Label Studio, Roboflow exports...);
its images are read from `images` (a folder or a zip), else from the first of the json's folder, ``images/``
beside it, ``images/`` beside its folder, or ``<X>/`` beside its folder for ``instances_<X>.json`` (COCO's own
layout) that holds the first listed file. There relpath is the json's ``file_name``. Every listed file must
exist: a FileNotFoundError names the missing ones.

Crowd annotations (iscrowd=1: one RLE region covering a group of objects) are dropped by default
(crowd='drop'), as DETR training does: they are not instances, and pycocotools' COCOeval reads them from the
ground-truth json itself to ignore detections inside them. crowd='keep' returns them with iscrowd=1.
Boxes are clamped to the image; boxes of zero width or height after clamping are dropped with their masks.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lfi.data.base import decode_rgb, make_boxes
from lfi.data.keys import image_key
from lfi.data.source import FileSource, open_source

SPLITS = ("train", "val")
CROWD = ("drop", "keep")


class CocoDetection(Dataset):
    """COCO-2017-format instances of `split` ('train' or 'val'), or of any COCO-format json by path.

    root: the folder holding ``coco_tiny.zip`` (or the shared data root), the zip itself, or an extracted
    folder containing ``annotations/`` (``coco_tiny/`` or a full COCO folder); or a COCO-format ``.json``
    file (then `split` is not read, and `images` may name the folder or zip of its images).
    """

    def __init__(
        self,
        root: Path | str,
        split: str = "val",
        return_masks: bool = False,
        crowd: str = "drop",
        return_bytes: bool = False,
        images: Path | str | None = None,
    ) -> None:
        if crowd not in CROWD:
            raise ValueError(f"crowd must be one of {CROWD}, got {crowd!r}")
        by_path = Path(root).suffix.lower() == ".json"
        if by_path:
            ann = Path(root)
            if not ann.is_file():
                raise FileNotFoundError(f"{ann}: no such COCO annotation file")
            origin, text = str(ann), ann.read_bytes()
        else:
            if split not in SPLITS:
                raise ValueError(f"COCO split must be one of {SPLITS}, got {split!r}")
            if images is not None:
                raise ValueError(
                    "images= is for a COCO json given by path; root here is a COCO folder or zip"
                )
            self.source = open_source(root, "coco_tiny", "coco_tiny*.zip", "annotations")
            ann_rel = f"annotations/instances_{split}2017.json"
            origin, text = f"{self.source.describe()}:{ann_rel}", self.source.read(ann_rel)
        try:
            dataset = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{origin}: not valid JSON ({e})") from e
        if not isinstance(dataset, dict):
            raise ValueError(f"{origin}: expected a COCO json object with images, annotations, categories")
        for field in ("images", "annotations", "categories"):
            if field not in dataset:
                raise ValueError(f"{origin}: missing top-level field {field!r}")
        names = [str(info.get("file_name", "")) for info in dataset["images"]]
        self.prefix = "" if by_path else f"{split}2017/"
        if by_path:
            self.source = _images_source(Path(root), images, names[0] if names else "")
        missing = [n for n in names if not n or not self.source.exists(self.prefix + n)]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            hint = "; give the folder of the images as data.train_dir / data.val_dir" if by_path else ""
            raise FileNotFoundError(
                f"{origin}: {len(missing)} of {len(names)} listed images ('file_name') are not in "
                f"{self.source.describe()}{'/' + self.prefix if self.prefix else ''}: {shown}{hint}"
            )
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            self.coco.createIndex()
        self.coco_ids = sorted(self.coco.getCatIds())
        unknown = sorted({a.get("category_id") for a in dataset["annotations"]} - set(self.coco_ids), key=str)
        if unknown:
            raise ValueError(f"{origin}: annotations name category ids {unknown[:5]} that 'categories' lacks")
        self.label_of = {cid: i for i, cid in enumerate(self.coco_ids)}
        self.classes = [self.coco.cats[cid]["name"] for cid in self.coco_ids]
        self.image_ids = sorted(self.coco.getImgIds())
        self.split = split
        self.return_masks = return_masks
        self.crowd = crowd
        self.return_bytes = return_bytes

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        relpath = f"{self.prefix}{info['file_name']}"
        data = self.source.read(relpath)
        image = decode_rgb(data, f"{self.source.describe()}:{relpath}")
        h, w = image.shape[-2:]
        if (info["height"], info["width"]) != (h, w):
            raise ValueError(
                f"{relpath}: annotations say {info['height']}x{info['width']} (HxW), the file is {h}x{w}"
            )
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.crowd == "drop":
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
        keep = ((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])).tolist()
        anns = [a for a, k in zip(anns, keep, strict=True) if k]
        sample = {
            "image": image,
            "boxes": make_boxes(xyxy[torch.tensor(keep, dtype=torch.bool)], h, w),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "relpath": relpath,
            "key": image_key(relpath, data),
        }
        if self.return_masks:
            sample["masks"] = self._masks(anns, h, w)
        if self.return_bytes:
            sample["data"] = data
        return sample

    def _masks(self, anns: list[dict], h: int, w: int) -> tv_tensors.Mask:
        """Polygons / RLE (compressed or not) -> Mask uint8 (K, H, W), through pycocotools."""
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        for i, a in enumerate(anns):
            masks[i] = mask_utils.decode(self.coco.annToRLE(a))
        return tv_tensors.Mask(torch.from_numpy(masks))


def _images_source(ann: Path, images: Path | str | None, first: str) -> FileSource:
    """Where the images of COCO json `ann` are (module doc): `images` (a folder, or a zip with or without
    enclosing folders), else the first candidate folder that holds `first`, the first listed file_name."""
    if images is not None:
        images = Path(images)
        if images.is_dir():
            return FileSource(folder=images)
        if not images.is_file():
            raise FileNotFoundError(f"{images}: no such folder or zip (the images of {ann})")
        if images.suffix.lower() != ".zip":
            raise ValueError(f"{images}: expected the folder or .zip of the images of {ann}")
        from lfi.data.imagefolder import _Tree

        tree, base = _Tree.of_zip(images), ""
        while first and f"{base}{first}" not in tree.files and len(tree.subdirs(base.rstrip("/"))) == 1:
            base += tree.subdirs(base.rstrip("/"))[0] + "/"
        return FileSource([images], prefix=base if f"{base}{first}" in tree.files else "")
    here = ann.parent
    candidates = [here, here / "images", here.parent / "images"]
    if ann.stem.startswith("instances_"):
        candidates.append(here.parent / ann.stem.removeprefix("instances_"))
    for folder in candidates:
        if first and (folder / first).is_file():
            return FileSource(folder=folder)
    return FileSource(folder=here)
