"""Images decoded once: a memory-mapped uint8 array of a whole dataset, for the GPU-resident data path.

    cache = ImageCache.build(dataset, side=64, folder=Path("~/.cache/lfi"))   # decodes once, with progress
    cache.images     # np.memmap (N, 3, side, side) uint8;  cache.labels (N,), cache.keys [N store keys]

The file is named by a digest of what it holds: the dataset's source files (their SHA-256), the images'
relative paths and the side, so a changed archive, another subset or another size is another cache, and an
existing cache is reused without decoding anything. Writing goes to a temporary file renamed at the end, so
an interrupted build leaves no half cache behind.

Its sidecar manifest (``images-<digest>.json``) records the labels and keys, the size and mtime of every
source file (the zips; for a folder, each image file) and of the .npy itself, and the .npy's SHA-256. Every
open checks the stats (cheap: one stat per file) and the array's shape; `verify="full"` (what `lfi prepare`
does) also re-hashes the .npy (about 1 s per GB), which catches a byte changed with its mtime kept. A cache
that fails a check is rebuilt with a one-line warning naming the file and what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

DEFAULT_FOLDER = Path(os.environ.get("LFI_CACHE", Path.home() / ".cache" / "lfi"))
MANIFEST_VERSION = 2  # 2: sources' and the array's stats and the array's SHA-256 (1: labels and keys only)


class CacheInvalid(ValueError):
    """An image cache is stale or damaged; the message names the file and what is wrong."""


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=64)
def file_digest(path: Path, size: int, mtime: float) -> str:
    """SHA-256 of a file (size and mtime only key the memo)."""
    return sha256_of(path)


def _stat(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file, None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def source_stats(dataset: Dataset) -> dict[str, list[int] | None]:
    """[size, mtime_ns] of every file a cache of `dataset` is decoded from: its zips and, read from a folder,
    each of its image files (None: not in the folder). Empty for datasets not backed by files."""
    base, indices = _base(dataset)
    source, records = getattr(base, "source", None), getattr(base, "records", None)
    if source is None or records is None:
        return {}
    paths = [Path(z) for z in getattr(source, "zips", [])]
    if getattr(source, "folder", None) is not None:
        paths += [Path(source.folder) / records[i].relpath for i in indices]
    return {str(p): _stat(p) for p in paths}


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
            image = F.interpolate(
                image[None].float(), size=(self.side, self.side), mode="bilinear", antialias=True
            )
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
        cls,
        dataset: Dataset,
        side: int,
        folder: Path = DEFAULT_FOLDER,
        workers: int = 0,
        progress: bool = True,
        verify: str = "stat",
    ) -> ImageCache:
        """Open the cache of `dataset` at `side`, decoding it first if it does not exist yet, or again (with a
        warning naming the file) if it fails its checks: verify 'stat' (every open: sources' and its own size
        and mtime, shape) or 'full' (also the .npy's SHA-256)."""
        if verify not in ("stat", "full"):
            raise ValueError(f"verify must be 'stat' or 'full', got {verify!r}")
        folder = Path(folder).expanduser()
        path = folder / f"images-{dataset_digest(dataset, side)}.npy"
        sources = source_stats(dataset)  # before decoding: a file changed meanwhile leaves the cache stale
        with _build_lock(path):  # processes that want one cache at once (DDP ranks) decode it once
            if path.is_file() or path.with_suffix(".json").is_file():
                try:
                    return cls.open(path, sources, full=verify == "full")
                except CacheInvalid as error:
                    warnings.warn(f"{error}; rebuilding it", stacklevel=2)
            _decode(dataset, side, path, workers, progress, sources)
            return cls.open(path, sources)

    @classmethod
    def open(
        cls, path: Path, sources: dict[str, list[int] | None] | None = None, full: bool = False
    ) -> ImageCache:
        """A cache checked against its manifest: CacheInvalid naming the file if anything disagrees.

        sources: `source_stats` of the dataset now (None: not checked); full: also hash the .npy."""
        path = Path(path)
        meta = _read_manifest(path.with_suffix(".json"))
        problem = _check(path, meta, sources, full)
        if problem:
            raise CacheInvalid(problem)
        try:
            images = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:  # e.g. "mmap length is greater than file size"
            raise CacheInvalid(f"{path}: unreadable image cache ({error})") from None
        shape = (len(meta["keys"]), 3, meta["side"], meta["side"])
        if images.shape != shape or images.dtype != np.uint8:
            raise CacheInvalid(
                f"{path}: holds {images.dtype} {images.shape}, its manifest says uint8 {shape}"
            )
        return cls(images, np.asarray(meta["labels"], dtype=np.int64), list(meta["keys"]), path)


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """flock on ``<cache>.lock`` while a cache is checked or built (released by the kernel if killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _decode(
    dataset: Dataset,
    side: int,
    path: Path,
    workers: int,
    progress: bool,
    sources: dict[str, list[int] | None],
) -> None:
    """Decode `dataset` into `path` (N, 3, side, side) uint8 and write its manifest; each via a temporary
    file renamed into place, the array first (a kill in between leaves a manifest that no longer matches)."""
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
    digest = sha256_of(tmp)
    os.replace(tmp, path)
    manifest = {"version": MANIFEST_VERSION, "side": side, "labels": labels.tolist(), "keys": keys}
    manifest |= {"sources": sources, "array": {"stat": _stat(path), "sha256": digest}}
    meta = path.with_suffix(".json")
    tmp_meta = meta.with_name(f".tmp-{os.getpid()}-{meta.name}")
    tmp_meta.write_text(json.dumps(manifest))
    os.replace(tmp_meta, meta)


def _read_manifest(path: Path) -> dict:
    """A cache's manifest; CacheInvalid naming it if missing, damaged or of another version."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheInvalid(f"{path}: image-cache manifest missing") from None
    except (OSError, ValueError) as error:
        raise CacheInvalid(f"{path}: damaged image-cache manifest ({error})") from None
    if not isinstance(meta, dict) or meta.get("version") != MANIFEST_VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise CacheInvalid(
            f"{path}: image-cache manifest version {found!r}, this lfi writes {MANIFEST_VERSION}"
        )
    missing = {"side", "labels", "keys", "sources", "array"} - set(meta)
    if missing or len(meta["labels"]) != len(meta["keys"]):
        raise CacheInvalid(
            f"{path}: damaged image-cache manifest (missing {sorted(missing)} or labels != keys)"
        )
    return meta


def _check(path: Path, meta: dict, sources: dict[str, list[int] | None] | None, full: bool) -> str | None:
    """Why the cache at `path` does not match its manifest `meta` (and the dataset's `sources`), or None."""
    if sources is not None:
        changed = sorted(
            f for f in set(sources) | set(meta["sources"]) if sources.get(f) != meta["sources"].get(f)
        )
        if changed:
            more = f" (and {len(changed) - 1} more files)" if len(changed) > 1 else ""
            return f"{path}: stale image cache: {changed[0]} changed since it was built{more}"
    found = _stat(path)
    if found != meta["array"]["stat"]:
        return (
            f"{path}: damaged or modified image cache: [size, mtime_ns] {found}, built as "
            f"{meta['array']['stat']}"
        )
    if full and sha256_of(path) != meta["array"]["sha256"]:
        return f"{path}: damaged image cache: its SHA-256 differs from the one recorded when it was built"
    return None


def _collate(batch: Sequence[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, labels, keys = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels), list(keys)


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, unit="batch")
