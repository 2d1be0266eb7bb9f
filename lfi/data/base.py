"""Common sample format of every classification dataset in `lfi.data`.

A sample is a dict:
    image       tv_tensors.Image uint8 (3, H, W), RGB (grey and paletted/alpha PNGs are converted)
    label       int, 0..num_classes-1
    class_name  str
    boxes       tv_tensors.BoundingBoxes XYXY, absolute pixels, canvas (H, W); shape (K, 4), K may be 0
    relpath     dataset-relative path of the image file, e.g. 'val/images/val_0.JPEG'
    domain      str, only for multi-domain datasets (PACS, VLCS): the image's domain, e.g. 'sketch'
    key         lfi.extract.store.image_key(relpath, data): the image's key in the interaction store
    data        raw file bytes (only with return_bytes=True)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import PIL.Image
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from lfi.data.source import FileSource
from lfi.extract.store import image_key


@dataclass(frozen=True)
class Record:
    """One image: where it is, its class, its boxes (XYXY absolute, possibly none), its domain."""

    relpath: str
    label: int
    boxes: tuple[tuple[float, float, float, float], ...] = field(default=())
    domain: str = ""


def decode_rgb(data: bytes, origin: str) -> tv_tensors.Image:
    """Encoded image bytes -> tv_tensors.Image uint8 (3, H, W) RGB. `origin` names the file in errors.

    PIL rather than torchvision.io: it converts every mode (grey, palette, alpha, CMYK) to RGB, and
    torchvision deprecates its decoders from 0.29 on.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except (PIL.UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{origin}: cannot decode as an image ({e})") from e
    return tv_tensors.Image(pil_to_tensor(rgb))


def make_boxes(boxes: torch.Tensor | list, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """(K, 4) XYXY absolute -> tv_tensors.BoundingBoxes on canvas (H, W); K = 0 gives shape (0, 4)."""
    t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(t, format="XYXY", canvas_size=(height, width))


class ImageDataset(Dataset):
    """A list of `Record`s read from a `FileSource`; subclasses only build the records and class names."""

    def __init__(
        self, source: FileSource, records: list[Record], classes: list[str], return_bytes: bool = False
    ) -> None:
        if not records:
            raise ValueError(f"{type(self).__name__}: no images found in {source.describe()}")
        self.source = source
        self.records = records
        self.classes = classes
        self.return_bytes = return_bytes

    @property
    def labels(self) -> list[int]:
        """Label of every sample, without reading any image (for stratified subsets)."""
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        data = self.source.read(rec.relpath)
        image = decode_rgb(data, f"{self.source.describe()}:{rec.relpath}")
        h, w = image.shape[-2:]
        sample = {
            "image": image,
            "label": rec.label,
            "class_name": self.classes[rec.label],
            "boxes": make_boxes(list(rec.boxes), h, w),
            "relpath": rec.relpath,
            "key": image_key(rec.relpath, data),
        }
        if rec.domain:
            sample["domain"] = rec.domain
        if self.return_bytes:
            sample["data"] = data
        return sample
