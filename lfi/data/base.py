"""Common sample format of every classification dataset in `lfi.data`.

A sample is a dict:
    image       tv_tensors.Image uint8 (3, H, W), RGB (grey, 16-bit, paletted/alpha, CMYK are converted)
    label       int, 0..num_classes-1
    class_name  str
    boxes       tv_tensors.BoundingBoxes XYXY, absolute pixels, canvas (H, W); shape (K, 4), K may be 0
    relpath     dataset-relative path of the image file, e.g. 'val/images/val_0.JPEG'
    domain      str, only for multi-domain datasets (PACS, VLCS): the image's domain, e.g. 'sketch'
    key         lfi.data.keys.image_key(relpath, data): the image's key in the interaction store
    wnid        str, TinyImageNet only: the ImageNet id of the class, e.g. 'n01443537'
    data        raw file bytes (only with return_bytes=True)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from lfi.data.keys import image_key
from lfi.data.source import FileSource


@dataclass(frozen=True)
class Record:
    """One image: where it is, its class, its boxes (XYXY absolute, possibly none), its domain."""

    relpath: str
    label: int
    boxes: tuple[tuple[float, float, float, float], ...] = field(default=())
    domain: str = ""


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded faithfully; `path` names it (`lfi extract --on-error skip` lists
    it in the store's failed.jsonl)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


# 16-bit greyscale modes: PIL's convert("RGB") clips them at 255 (a 16-bit PNG comes out nearly all white).
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(img: PIL.Image.Image, origin: str) -> PIL.Image.Image:
    """Any PIL mode -> RGB, scaling high-bit-depth greyscale to 8 bits instead of clipping it."""
    if img.mode in _MODES_16BIT or img.mode == "I":
        values = np.asarray(img).astype(np.int64)
        # mode "I" (32-bit int) is how older PNG decoders and some TIFFs carry 16-bit data
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(
                f"{origin}: {img.mode} image with values in [{values.min()}, {values.max()}], outside the "
                "16-bit range; convert it to 8-bit RGB first",
                origin,
            )
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257): 65535 -> 255
        return PIL.Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "F":
        raise ImageDecodeError(
            f"{origin}: floating-point image (mode F) has no defined intensity range; convert it to 8-bit RGB "
            "first",
            origin,
        )
    # 8-bit modes (L, LA, P, PA, RGBA, CMYK, YCbCr, 1, ...): PIL's own conversion is exact; alpha is dropped.
    return img.convert("RGB")


def decode_rgb(data: bytes, origin: str) -> tv_tensors.Image:
    """Encoded image bytes -> tv_tensors.Image uint8 (3, H, W) RGB. `origin` names the file in errors.

    PIL rather than torchvision.io: it reads every mode (grey, 16-bit, palette, alpha, CMYK), and
    torchvision deprecates its decoders from 0.29 on. Errors are `ImageDecodeError`s naming `origin`.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            rgb = _to_rgb(img, origin)
    except ImageDecodeError:
        raise
    except PIL.Image.DecompressionBombError as e:
        raise ImageDecodeError(
            f"{origin}: refused as a possible decompression bomb ({e}); if the image is genuine, raise "
            "PIL.Image.MAX_IMAGE_PIXELS before reading it",
            origin,
        ) from e
    except Exception as e:  # decoders of damaged files raise OSError, SyntaxError, ValueError, zlib.error...
        raise ImageDecodeError(
            f"{origin}: cannot decode as an image ({type(e).__name__}: {e})", origin
        ) from e
    return tv_tensors.Image(pil_to_tensor(rgb))


def make_boxes(boxes: torch.Tensor | list, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """(K, 4) XYXY absolute -> tv_tensors.BoundingBoxes on canvas (H, W); K = 0 gives shape (0, 4)."""
    t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(t, format="XYXY", canvas_size=(height, width))


class Samples(Dataset):
    """The samples of `dataset`, each a fresh dict without its raw bytes ('data' is read for extraction
    only), through `transform`: the base of the wrappers that change samples on their way to a model
    (`lfi.data.detection.WithOriginalSize`, `lfi.data.interaction.WithInteractionMaps`,
    `lfi.train.data.SeededSamples`). Subclasses add to `prepare`, which runs before the transform."""

    def __init__(self, dataset: Dataset, transform: Callable[[dict], dict] | None = None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def prepare(self, sample: dict, index: int) -> dict:
        """The sample before the transform; the identity here."""
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample.pop("data", None)
        sample = self.prepare(sample, index)
        return self.transform(sample) if self.transform is not None else sample


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
