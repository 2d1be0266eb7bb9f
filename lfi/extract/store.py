"""The interaction store: one interaction map per image, written once by `lfi extract`, read many times.

Layout of a store folder::

    store.json                          metadata of the whole store (teacher, checkpoint, grid, ...)
    shards/<writer>-<uid>.safetensors   committed records; one file per flush of one writer
    shards/.tmp-*                       a flush in progress (or killed): ignored by readers

A shard holds n records as tensors ``maps`` (n, h, w) float32, ``hw`` (n, 2) int32 (image H, W),
``valid`` (n,) uint8, ``empty`` (n,) uint8 (relu(fore - back) was all zero and the store's empty policy was
applied), plus header metadata: the record keys, per-record teacher info (JSON) and a sha256 of the tensor
bytes. A writer buffers records and commits them by writing a temporary file and `os.replace`-ing it
into place, so a kill at any point leaves either a whole shard or none: never a partial or duplicate
record. Each writer (torchrun rank) writes files with its own unique names, so several write at once
without locks; a re-run skips the keys already committed by anyone.

Readers index the shard headers once and read maps through memory maps (`safetensors.safe_open`), opened
lazily in each process, so DataLoader workers read at random without sharing file handles.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from lfi import __version__

FORMAT = 1
META_FILE = "store.json"
SHARD_DIR = "shards"
TMP_PREFIX = ".tmp-"
_TENSORS = ("maps", "hw", "valid", "empty")


def image_key(relpath: str, data: bytes) -> str:
    """Stable id of an image: its dataset-relative path and a short hash of its bytes, "<relpath>#<12 hex>".

    The path keeps keys readable and unique within a dataset; the hash makes a changed file a new key.
    """
    rel = PurePosixPath(relpath.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"image_key: relpath must be a dataset-relative path, got {relpath!r}")
    return f"{rel.as_posix()}#{hashlib.sha256(data).hexdigest()[:12]}"


class StoreMetadataError(ValueError):
    """The store was written with metadata other than what the caller expects."""


class StoreCorruptError(RuntimeError):
    """A committed shard cannot be read or fails its checksum."""


def _jsonable(value: Any) -> Any:
    """Normalise metadata for comparison (tuples -> lists, etc.) by a JSON round trip."""
    return json.loads(json.dumps(value, sort_keys=True))


def check_metadata(found: Mapping[str, Any], expect: Mapping[str, Any], where: str) -> None:
    """Raise StoreMetadataError listing every field of `expect` that `found` lacks or differs in."""
    found, expect = _jsonable(dict(found)), _jsonable(dict(expect))
    problems = [
        f"field {k!r}: expected {v!r}, found {found[k]!r}"
        if k in found
        else f"field {k!r}: expected {v!r}, missing"
        for k, v in expect.items()
        if found.get(k, object()) != v
    ]
    if problems:
        raise StoreMetadataError(f"{where}: metadata does not match: " + "; ".join(problems))


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in _TENSORS:
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class Record:
    """One stored image: map (h, w) float32, hw = image (H, W), valid, empty (policy applied), info."""

    key: str
    map: torch.Tensor
    hw: tuple[int, int]
    valid: bool
    empty: bool
    info: dict[str, Any] = field(default_factory=dict)


def _metadata_path(root: Path) -> Path:
    return root / META_FILE


def read_metadata(root: Path | str) -> dict[str, Any]:
    """The store-level metadata of the store at `root`."""
    path = _metadata_path(Path(root))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no interaction store here (missing {META_FILE})")
    return json.loads(path.read_text())


class StoreWriter:
    """Appends records to a store as one writer (e.g. one torchrun rank).

    root: store folder (created if absent). metadata: store-level fields (JSON-serialisable); if the store
    exists they must equal its metadata exactly, so one store never mixes teachers or settings.
    writer: a name for this writer's shard files (e.g. "r003"); unique suffixes keep concurrent writers apart.
    shard_size / flush_seconds: commit a shard after this many records or this long since the last commit,
    bounding the work a kill can lose.
    """

    def __init__(
        self,
        root: Path | str,
        metadata: Mapping[str, Any],
        writer: str = "r000",
        shard_size: int = 512,
        flush_seconds: float = 120.0,
    ) -> None:
        self.root = Path(root)
        self.metadata = _jsonable({**metadata, "format": FORMAT, "lfi_version": __version__})
        if "grid" not in self.metadata:
            raise ValueError("store metadata needs a 'grid' field (h, w)")
        self.grid = tuple(self.metadata["grid"])
        self.writer = writer
        self.shard_size = shard_size
        self.flush_seconds = flush_seconds
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        meta_path = _metadata_path(self.root)
        if not meta_path.is_file():
            tmp = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}.json"
            _fsync_write(tmp, json.dumps(self.metadata, indent=1, sort_keys=True).encode())
            os.replace(tmp, meta_path)  # concurrent creators write identical content; last one wins
        existing = read_metadata(self.root)
        check_metadata(existing, self.metadata, str(meta_path))
        check_metadata(self.metadata, existing, f"{meta_path} (fields only the store has)")
        self._buffer: list[Record] = []
        self._last_flush = time.monotonic()
        self.committed = 0

    def done_keys(self) -> set[str]:
        """Keys committed by any writer so far (re-read from disk)."""
        return set(InteractionStore(self.root)._index)

    def add(self, record: Record) -> None:
        """Buffer one record; commits a shard when the buffer is full or old."""
        if tuple(record.map.shape) != self.grid:
            raise ValueError(f"{record.key}: map shape {tuple(record.map.shape)} != store grid {self.grid}")
        self._buffer.append(record)
        if len(self._buffer) >= self.shard_size or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit buffered records as one shard: write a temporary file, fsync, then rename into place."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        recs, self._buffer = self._buffer, []
        tensors = {
            "maps": torch.stack([r.map.float() for r in recs]).contiguous(),
            "hw": torch.tensor([list(r.hw) for r in recs], dtype=torch.int32),
            "valid": torch.tensor([r.valid for r in recs], dtype=torch.uint8),
            "empty": torch.tensor([r.empty for r in recs], dtype=torch.uint8),
        }
        header = {
            "format": str(FORMAT),
            "keys": json.dumps([r.key for r in recs]),
            "info": json.dumps([r.info for r in recs]),
            "sha256": _digest(tensors),
        }
        name = f"{self.writer}-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = self.root / SHARD_DIR / f"{TMP_PREFIX}{name}"
        _fsync_write(tmp, save(tensors, metadata=header))
        os.replace(tmp, self.root / SHARD_DIR / name)
        self.committed += len(recs)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Buffered records are complete, so they are committed even when the loop stops on an error.
        self.close()


@dataclass
class _Shard:
    path: Path
    keys: list[str]
    info: list[dict[str, Any]]
    hw: torch.Tensor
    valid: torch.Tensor
    empty: torch.Tensor
    sha256: str


def _load_shard(path: Path) -> _Shard:
    """Parse one shard's header and small columns; StoreCorruptError naming the file if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = json.loads(meta["keys"])
            info = json.loads(meta["info"])
            shard = _Shard(
                path,
                keys,
                info,
                f.get_tensor("hw"),
                f.get_tensor("valid").bool(),
                f.get_tensor("empty").bool(),
                meta["sha256"],
            )
            n_maps = f.get_slice("maps").get_shape()[0]
    except Exception as e:  # safetensors raises its own error type for truncated/garbled files
        raise StoreCorruptError(f"{path}: unreadable shard ({type(e).__name__}: {e})") from e
    lengths = {len(keys), len(info), len(shard.hw), len(shard.valid), len(shard.empty), n_maps}
    if len(lengths) != 1:
        raise StoreCorruptError(f"{path}: columns have different lengths {sorted(lengths)}")
    return shard


@dataclass
class VerifyReport:
    """What `InteractionStore.verify` found. ok is True when nothing is corrupt, missing or duplicated."""

    records: int
    shards: int
    corrupt: list[str] = field(default_factory=list)
    bad_maps: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale_tmp: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.bad_maps or self.duplicates or self.missing)

    def summary(self) -> str:
        lines = [f"{self.records} records in {self.shards} shards: {'OK' if self.ok else 'PROBLEMS'}"]
        for label, items in [
            ("corrupt shard (delete it and re-run extraction to redo its records)", self.corrupt),
            ("map breaks the map convention", self.bad_maps),
            ("duplicate key (first shard by name wins)", self.duplicates),
            ("missing key", self.missing),
            ("leftover temporary file of an interrupted flush (harmless, may be deleted)", self.stale_tmp),
        ]:
            lines += [f"  {label}: {item}" for item in items[:20]]
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more ({label})")
        return "\n".join(lines)


class InteractionStore:
    """Read-only view of a store: `store[key]` -> Record, `store.map(key)` -> (h, w) float32.

    expect: metadata fields the caller relies on (e.g. {"teacher": "vit", "grid": [14, 14]}); a mismatch
    raises StoreMetadataError naming each field, the expected and the found value.
    The index is a snapshot taken at construction (`refresh()` re-scans); memory maps open lazily per process.
    """

    def __init__(
        self, root: Path | str, expect: Mapping[str, Any] | None = None, strict: bool = True
    ) -> None:
        self.root = Path(root)
        self.metadata = read_metadata(self.root)
        if expect:
            check_metadata(self.metadata, expect, str(_metadata_path(self.root)))
        self.strict = strict
        self.refresh()

    def refresh(self) -> None:
        """Re-scan the committed shards (sorted by name, first occurrence of a key wins)."""
        self._shards: list[_Shard] = []
        self._index: dict[str, tuple[int, int]] = {}
        self._corrupt: list[str] = []
        self._duplicates: list[str] = []
        for path in sorted((self.root / SHARD_DIR).glob("*.safetensors")):
            if path.name.startswith(TMP_PREFIX):
                continue
            try:
                shard = _load_shard(path)
            except StoreCorruptError as e:
                if self.strict:
                    raise StoreCorruptError(f"{e}; run `lfi store verify {self.root}`") from e
                self._corrupt.append(str(e))
                continue
            self._shards.append(shard)
            for row, key in enumerate(shard.keys):
                if key in self._index:
                    self._duplicates.append(key)
                else:
                    self._index[key] = (len(self._shards) - 1, row)
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # memory maps are per process
        return state

    def _handle(self, shard: int) -> Any:
        if self._pid != os.getpid():  # forked DataLoader worker: open its own maps
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self._shards[shard].path), framework="pt")
        return self._handles[shard]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.metadata["grid"])

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._index)

    def _locate(self, key: str) -> tuple[int, int]:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"{self.root}: no record for image key {key!r}") from None

    def map(self, key: str) -> torch.Tensor:
        """The interaction map of one image: (h, w) float32 (all zeros if invalid)."""
        shard, row = self._locate(key)
        return self._handle(shard).get_slice("maps")[row : row + 1][0]

    def __getitem__(self, key: str) -> Record:
        shard, row = self._locate(key)
        s = self._shards[shard]
        hw = (int(s.hw[row, 0]), int(s.hw[row, 1]))
        return Record(key, self.map(key), hw, bool(s.valid[row]), bool(s.empty[row]), s.info[row])

    def info(self) -> dict[str, Any]:
        """Summary: metadata, record/shard counts, valid/empty counts, bytes on disk, per-writer counts."""
        valid = empty = 0
        writers: dict[str, int] = {}
        for shard_id, row in self._index.values():
            s = self._shards[shard_id]
            valid += bool(s.valid[row])
            empty += bool(s.empty[row])
            writer = s.path.name.rsplit("-", 1)[0]
            writers[writer] = writers.get(writer, 0) + 1
        return {
            "root": str(self.root),
            "metadata": self.metadata,
            "records": len(self),
            "valid": valid,
            "empty": empty,
            "shards": len(self._shards),
            "bytes": sum(s.path.stat().st_size for s in self._shards),
            "writers": writers,
        }

    def verify(self, expected_keys: Iterable[str] | None = None) -> VerifyReport:
        """Check every shard (readable, checksum, consistent columns) and every map (finite, non-negative,
        sums to 1 if valid or 0 if invalid, store grid); with expected_keys, list those without a record."""
        fresh = InteractionStore(self.root, strict=False)
        report = VerifyReport(
            records=len(fresh),
            shards=len(fresh._shards),
            corrupt=list(fresh._corrupt),
            duplicates=list(fresh._duplicates),
        )
        report.stale_tmp = sorted(str(p) for p in (self.root / SHARD_DIR).glob(f"{TMP_PREFIX}*"))
        for shard in fresh._shards:
            try:
                with safe_open(str(shard.path), framework="pt") as f:
                    tensors = {name: f.get_tensor(name) for name in _TENSORS}
            except Exception as e:
                report.corrupt.append(f"{shard.path}: unreadable ({type(e).__name__}: {e})")
                continue
            if _digest(tensors) != shard.sha256:
                report.corrupt.append(f"{shard.path}: checksum mismatch (file damaged after it was written)")
                continue
            maps = tensors["maps"].double()
            if tuple(maps.shape[1:]) != tuple(fresh.grid):
                report.corrupt.append(
                    f"{shard.path}: maps {tuple(maps.shape[1:])} != store grid {fresh.grid}"
                )
                continue
            sums = maps.sum(dim=(1, 2))
            target = shard.valid.double()
            good = torch.isfinite(maps).flatten(1).all(1) & (maps.flatten(1).min(1).values >= 0)
            good &= (sums - target).abs() < 1e-4
            report.bad_maps += [
                f"{k} ({shard.path.name})" for k, g in zip(shard.keys, good.tolist(), strict=True) if not g
            ]
        if expected_keys is not None:
            report.missing = sorted(set(expected_keys) - set(fresh._index))
        return report


def store_arrays(store: InteractionStore) -> dict[str, np.ndarray]:
    """All records as arrays in key order, for comparing stores: keys, maps (N, h, w), hw, valid, empty."""
    keys = sorted(store.keys())
    recs = [store[k] for k in keys]
    return {
        "keys": np.array(keys),
        "maps": np.stack([r.map.numpy() for r in recs]) if recs else np.zeros((0, *store.grid), np.float32),
        "hw": np.array([r.hw for r in recs], dtype=np.int32).reshape(-1, 2),
        "valid": np.array([r.valid for r in recs], dtype=bool),
        "empty": np.array([r.empty for r in recs], dtype=bool),
    }
