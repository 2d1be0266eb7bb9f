"""Images decoded once: a memory-mapped uint8 array of a whole dataset, for the GPU-resident data path.

    cache = ImageCache.build(dataset, side=64, folder=Path("~/.cache/lfi"))   # decodes once, with progress
    cache.images     # np.memmap (N, 3, side, side) uint8;  cache.labels (N,), cache.keys [N store keys]

The file is named by a digest of what it holds: the dataset's source files (their SHA-256), the images'
relative paths and the side, so a changed archive, another subset or another size is another cache, and an
existing cache is reused without decoding anything. Writing goes to a temporary file renamed at the end, so
an interrupted build leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

DEFAULT_FOLDER = Path(os.environ.get("LFI_CACHE", Path.home() / ".cache" / "lfi"))


@lru_cache(maxsize=64)
def file_digest(path: Path, size: int, mtime: float) -> str:
    """SHA-256 of a file (size and mtime only key the memo)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _base(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset under (nested) Subsets and the indices into it."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def dataset_digest(dataset: Dataset, side: int) -> str:
    """What a cache of `dataset` at `side` px depends on: source files, image paths, side, and the dataset's
    `cache_key` where it has one (a dataset that changes its files' images, e.g. paints a cue on them)."""
    base, indices = _base(dataset)
    source = getattr(base, "source", None)
    records = getattr(base, "records", None)
    digest = hashlib.sha256(f"{type(base).__name__}|{side}".encode())
    if getattr(base, "cache_key", None):  # what a dataset paints on its files' images (lfi.data.shortcut)
        digest.update(f"|{base.cache_key}".encode())
    if source is None or records is None:  # not a file-backed dataset: its samples' keys (content hashes)
        for i in range(len(dataset)):
            digest.update(dataset[i]["key"].encode())
        return digest.hexdigest()[:20]
    files = [*getattr(source, "zips", [])]
    for path in files:
        stat = path.stat()
        digest.update(file_digest(path, stat.st_size, stat.st_mtime).encode())
    if getattr(source, "folder", None) is not None:
        digest.update(str(Path(source.folder).resolve()).encode())
    for i in indices:
        digest.update(records[i].relpath.encode())
    return digest.hexdigest()[:20]


class _Decoded(Dataset):
    """Samples -> (uint8 (3, side, side), label, key); non-square or other-size images are resized."""

    def __init__(self, dataset: Dataset, side: int) -> None:
        self.dataset, self.side = dataset, side

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        sample = self.dataset[index]
        image = sample["image"].as_subclass(torch.Tensor)
        if tuple(image.shape[-2:]) != (self.side, self.side):
            image = F.interpolate(image[None].float(), size=(self.side, self.side), mode="bilinear", antialias=True)
            image = image[0].round().clamp(0, 255).to(torch.uint8)
        return image, int(sample["label"]), sample["key"]


@dataclass
class ImageCache:
    """A dataset's images as one uint8 array (N, 3, side, side), with labels (N,) and store keys."""

    images: np.ndarray
    labels: np.ndarray
    keys: list[str]
    path: Path

    @classmethod
    def build(
        cls, dataset: Dataset, side: int, folder: Path = DEFAULT_FOLDER, workers: int = 0, progress: bool = True
    ) -> ImageCache:
        """Open the cache of `dataset` at `side`, decoding it first if it does not exist yet."""
        folder = Path(folder).expanduser()
        path = folder / f"images-{dataset_digest(dataset, side)}.npy"
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return cls.open(path)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(dataset)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, side, side))
        labels, keys = np.zeros(n, dtype=np.int64), []
        loader = DataLoader(_Decoded(dataset, side), batch_size=256, num_workers=workers, collate_fn=_collate)
        done = 0
        for batch_images, batch_labels, batch_keys in _progress(loader, progress, f"decoding {n} images once"):
            images[done : done + len(batch_keys)] = batch_images.numpy()
            labels[done : done + len(batch_keys)] = batch_labels.numpy()
            keys += batch_keys
            done += len(batch_keys)
        images.flush()
        del images
        os.replace(tmp, path)
        tmp_meta = meta.with_name(f".tmp-{os.getpid()}-{meta.name}")
        tmp_meta.write_text(json.dumps({"labels": labels.tolist(), "keys": keys, "side": side}))
        os.replace(tmp_meta, meta)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> ImageCache:
        meta_path = Path(path).with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{meta_path}: damaged image-cache index ({error}); delete {path} and it is rebuilt") from None
        images = np.load(path, mmap_mode="r")
        if images.shape[0] != len(meta["keys"]):
            raise ValueError(f"{path}: {images.shape[0]} images but {len(meta['keys'])} keys; delete it and it is rebuilt")
        return cls(images, np.asarray(meta["labels"], dtype=np.int64), list(meta["keys"]), Path(path))


def _collate(batch: Sequence[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, labels, keys = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels), list(keys)


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, unit="batch")
