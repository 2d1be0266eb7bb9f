"""The interaction store: one interaction map per image, written once by `lfi extract`, read many times.

Layout of a store folder (`lfi.store.layout`)::

    store.json                          metadata of the whole store (teacher, checkpoint, grid, ...; store_uid
                                        and store_id, made at creation: `layout.IDENTITY`)
    shards/<writer>-<uid>.safetensors   committed records; one file per flush of one writer
    shards/.tmp-*                       a flush in progress (or killed): ignored by readers
    .lock                               flock'ed by a writer while it commits a shard
    failed.jsonl                        images `lfi extract --on-error skip` could not process

A shard holds n records as tensors ``maps`` (n, h, w) float32, ``hw`` (n, 2) int32 (image H, W),
``valid`` (n,) uint8, ``empty`` (n,) uint8 (relu(fore - back) was all zero and the store's empty policy was
applied), plus header metadata: the record keys, per-record teacher info (JSON), a copy of store.json and
the sha256 of all the rest (`layout.shard_digest`).

Writing: a writer buffers records and commits them under the store's lock: it re-reads the keys committed
by anyone, drops the records already there, writes a temporary file and `os.replace`s it into place. So a
kill at any point leaves either a whole shard or none, and writers that run at once (torchrun ranks, or a
job launched twice) never store a key twice.

Reading: the index of the shard headers is built once, checking every shard's digest and that its copy of
store.json equals store.json on the way (one sequential read), so an edited store.json or a shard copied in
from another store is refused, naming the file and the field; maps are then read through memory maps
(`safetensors.safe_open`), opened lazily in each process, so DataLoader workers read at random without sharing
file handles.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from lfi.store.layout import (
    FORMAT,
    IDENTITY,
    SHARD_DIR,
    SHARD_SUFFIX,
    TMP_PREFIX,
    StoreCorruptError,
    StoreMetadataError,
    fsync_write,
    identity_problem,
    lfi_version,
    metadata_differences,
    metadata_path,
    parse_header,
    read_failures,
    read_header,
    read_metadata,
    read_shard,
    shard_digest,
    shard_paths,
    stale_tmp_paths,
    store_lock,
    summarize,
    with_identity,
)

__all__ = [
    "SHARD_DIR",
    "InteractionStore",
    "Record",
    "StoreCorruptError",
    "StoreMetadataError",
    "StoreWriter",
    "VerifyReport",
    "check_metadata",
    "compact",
    "read_metadata",
    "store_arrays",
]


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


@dataclass
class Record:
    """One stored image: map (h, w) float32, hw = image (H, W), valid, empty (policy applied), info."""

    key: str
    map: torch.Tensor
    hw: tuple[int, int]
    valid: bool
    empty: bool
    info: dict[str, Any] = field(default_factory=dict)


def _shard_bytes(records: list[Record], store_meta: Mapping[str, Any]) -> bytes:
    """Serialise records as one shard whose header carries the digest of everything else."""
    tensors = {
        "maps": torch.stack([r.map.float() for r in records]).contiguous(),
        "hw": torch.tensor([list(r.hw) for r in records], dtype=torch.int32),
        "valid": torch.tensor([r.valid for r in records], dtype=torch.uint8),
        "empty": torch.tensor([r.empty for r in records], dtype=torch.uint8),
    }
    header = {
        "format": str(FORMAT),
        "keys": json.dumps([r.key for r in records]),
        "info": json.dumps([r.info for r in records]),
        "store": json.dumps(store_meta, sort_keys=True),
        "sha256": "",
    }
    # The digest is defined on the serialised file (`layout.shard_digest`), which readers parse without
    # torch: serialise once to compute it, then again with it (a shard is small).
    draft = save(tensors, metadata=header)
    parsed = parse_header(Path("<new shard>"), draft)
    digest = shard_digest(parsed.header, draft, parsed.data_start)
    return save(tensors, metadata={**header, "sha256": digest})


def _new_shard_name(writer: str) -> str:
    return f"{writer}-{uuid.uuid4().hex[:12]}{SHARD_SUFFIX}"


def _commit_shard(root: Path, name: str, records: list[Record], store_meta: Mapping[str, Any]) -> Path:
    """Write records as shard `name`: temporary file, fsync, rename. Call with the store's lock held."""
    tmp = root / SHARD_DIR / f"{TMP_PREFIX}{name}"
    fsync_write(tmp, _shard_bytes(records, store_meta))
    os.replace(tmp, root / SHARD_DIR / name)
    return root / SHARD_DIR / name


class _CommittedKeys:
    """Keys committed to a store, kept current by reading the headers of shards not seen before."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys: set[str] = set()
        self._seen: set[str] = set()

    def refresh(self) -> set[str]:
        for path in shard_paths(self.root):
            if path.name not in self._seen:
                self.add(path, read_header(path).keys)
        return self.keys

    def add(self, shard: Path, keys: Iterable[str]) -> None:
        """Count a shard as read (e.g. one this process just wrote, whose keys it knows)."""
        self.keys.update(keys)
        self._seen.add(shard.name)


class StoreWriter:
    """Appends records to a store as one writer (e.g. one torchrun rank).

    root: store folder (created if absent). metadata: store-level fields (JSON-serialisable); if the store
    exists they must equal its metadata exactly, so one store never mixes teachers or settings.
    writer: a name for this writer's shard files (e.g. "r003"); unique suffixes keep writers' files apart.
    shard_size / flush_seconds: commit a shard after this many records or this long since the last commit,
    bounding the work a kill can lose. A record whose key another writer committed first is dropped at
    commit (counted in `dropped`), so concurrent writers never store a key twice.
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
        settings = {k: v for k, v in metadata.items() if k not in IDENTITY}
        self.metadata = _jsonable({**settings, "format": FORMAT, "lfi_version": lfi_version()})
        if "grid" not in self.metadata:
            raise ValueError("store metadata needs a 'grid' field (h, w)")
        self.grid = tuple(self.metadata["grid"])
        self.writer = writer
        self.shard_size = shard_size
        self.flush_seconds = flush_seconds
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        meta_path = metadata_path(self.root)
        with store_lock(self.root):
            # Under the lock no write is in progress, so any temporary file is a killed writer's.
            for tmp in stale_tmp_paths(self.root):
                tmp.unlink(missing_ok=True)
            if not meta_path.is_file():
                tmp = self.root / f"{TMP_PREFIX}{uuid.uuid4().hex}.json"
                fsync_write(tmp, json.dumps(with_identity(self.metadata), indent=1, sort_keys=True).encode())
                os.replace(tmp, meta_path)
        existing = read_metadata(self.root)
        if problem := identity_problem(existing, meta_path):
            raise StoreMetadataError(problem)
        settings = {k: v for k, v in existing.items() if k not in IDENTITY}
        try:
            check_metadata(settings, self.metadata, str(meta_path))
            check_metadata(self.metadata, settings, f"{meta_path} (fields only the store has)")
        except StoreMetadataError as e:
            raise StoreMetadataError(
                f"{e}; one store holds the maps of one teacher and one set of settings: write to a new "
                "store folder, or use the settings the store was written with"
            ) from e
        self.metadata = existing  # with the store's identity, which every shard carries
        self._committed = _CommittedKeys(self.root)
        self._buffer: list[Record] = []
        self._last_flush = time.monotonic()
        self.committed = 0
        self.dropped = 0

    def done_keys(self) -> set[str]:
        """Keys committed by any writer so far (re-read from disk; only new shards' headers are read).

        The writer's own set, kept current: read it, do not modify it."""
        return self._committed.refresh()

    def add(self, record: Record) -> None:
        """Buffer one record; commits a shard when the buffer is full or old."""
        if tuple(record.map.shape) != self.grid:
            raise ValueError(f"{record.key}: map shape {tuple(record.map.shape)} != store grid {self.grid}")
        if not torch.isfinite(record.map).all():
            raise ValueError(
                f"{record.key}: map has NaN or Inf values, refused (not written to {self.root}); "
                "the teacher produced them for this image"
            )
        self._buffer.append(record)
        if len(self._buffer) >= self.shard_size or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit buffered records not yet in the store as one shard, under the store's lock."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        buffered, self._buffer = self._buffer, []
        with store_lock(self.root):
            done = self._committed.refresh()
            records = {r.key: r for r in buffered if r.key not in done}  # also one record per key
            self.dropped += len(buffered) - len(records)
            if records:
                name = _new_shard_name(self.writer)
                path = _commit_shard(self.root, name, list(records.values()), self.metadata)
                self._committed.add(path, records)
        self.committed += len(records)

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
    store: dict[str, Any]
    hw: torch.Tensor
    valid: torch.Tensor
    empty: torch.Tensor


# dtypes of the small columns as safetensors names them, and as torch reads them
_COLUMNS = {"hw": ("I32", torch.int32), "valid": ("U8", torch.uint8), "empty": ("U8", torch.uint8)}


def _load_shard(path: Path) -> _Shard:
    """Read one shard, check its digest, keep its small columns; StoreCorruptError naming it if bad."""
    header, data = read_shard(path)
    columns = {}
    for name, (dtype, torch_dtype) in _COLUMNS.items():
        if header.tensors[name][0] != dtype:
            raise StoreCorruptError(f"{path}: column {name!r} is {header.tensors[name][0]}, expected {dtype}")
        raw = bytearray(header.column(name, data))  # a copy: the file's bytes are not kept
        columns[name] = torch.frombuffer(raw, dtype=torch_dtype).reshape(header.tensors[name][1])
    return _Shard(
        path,
        header.keys,
        header.info,
        header.store,
        columns["hw"],
        columns["valid"].bool(),
        columns["empty"].bool(),
    )


@dataclass
class VerifyReport:
    """What `InteractionStore.verify` found. ok is True when nothing is corrupt, missing or duplicated."""

    root: str
    records: int
    shards: int
    corrupt: list[str] = field(default_factory=list)
    bad_maps: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale_tmp: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.bad_maps or self.duplicates or self.missing)

    def summary(self) -> str:
        lines = [f"{self.records} records in {self.shards} shards: {'OK' if self.ok else 'PROBLEMS'}"]
        compact = f"run `lfi store compact {self.root}`"
        for label, items in [
            ("corrupt", self.corrupt),  # each message names the shard and the repair
            ("map breaks the map convention (delete its shard and re-run `lfi extract`)", self.bad_maps),
            (f"duplicate key ({compact})", self.duplicates),
            ("missing key (re-run `lfi extract`, which resumes)", self.missing),
            (f"leftover temporary file of an interrupted write (harmless; {compact})", self.stale_tmp),
            ("image that failed at extraction (from failed.jsonl)", self.failed),
        ]:
            lines += [f"  {label}: {item}" for item in items[:20]]
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more ({label})")
        return "\n".join(lines)


class InteractionStore:
    """Read-only view of a store: `store[key]` -> Record, `store.map(key)` -> (h, w) float32.

    expect: metadata fields the caller relies on (e.g. {"teacher": "vit", "grid": [14, 14]}); a mismatch
    raises StoreMetadataError naming each field, the expected and the found value.
    strict: a corrupt shard (unreadable, or its digest does not match) raises StoreCorruptError naming it, a
    shard whose copy of store.json differs from it, or a store.json edited since the store was created
    (`layout.identity_problem`), StoreMetadataError naming the file and each field; with strict=False such a
    shard is left out and listed (what `verify` reports).
    The index is a snapshot taken at construction (`refresh()` re-scans); memory maps open lazily per process.
    """

    def __init__(
        self, root: Path | str, expect: Mapping[str, Any] | None = None, strict: bool = True
    ) -> None:
        self.root = Path(root)
        self.metadata = read_metadata(self.root)
        if expect:
            check_metadata(self.metadata, expect, str(metadata_path(self.root)))
        self.strict = strict
        self.refresh()  # first: a shard's copy names the fields an edit of store.json changed
        self.identity = identity_problem(self.metadata, metadata_path(self.root))
        if self.identity and strict:
            raise StoreMetadataError(self.identity)

    def _check_copy(self, shard: _Shard) -> None:
        """StoreMetadataError naming the shard and each field its copy of store.json disagrees on."""
        differences = metadata_differences(self.metadata, shard.store, "store.json", "the shard's copy")
        if differences:
            raise StoreMetadataError(
                f"{shard.path}: its copy of store.json disagrees with {metadata_path(self.root)}: "
                + "; ".join(differences)
                + " (store.json was edited, or this shard was copied from another store: put the original "
                "store.json back, or remove the shard)"
            )

    def refresh(self) -> None:
        """Re-scan the committed shards (sorted by name, first occurrence of a key wins), checking digests and
        that each shard's copy of store.json equals it (a shard of another store or an edited store.json)."""
        self._shards: list[_Shard] = []
        self._index: dict[str, tuple[int, int]] = {}
        self._corrupt: list[str] = []
        self._duplicates: list[str] = []
        for path in shard_paths(self.root):
            try:
                shard = _load_shard(path)
                self._check_copy(shard)
            except (StoreCorruptError, StoreMetadataError) as e:
                if self.strict:
                    raise
                self._corrupt.append(str(e))
                continue
            self._shards.append(shard)
            for row, key in enumerate(shard.keys):
                if key in self._index:
                    self._duplicates.append(f"{key} (again in {path.name})")
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
        return self._record(*self._locate(key))

    def _record(self, shard_id: int, row: int) -> Record:
        """Record `row` of shard `shard_id`, whether or not the index points to it (`compact` reads both)."""
        s = self._shards[shard_id]
        m = self._handle(shard_id).get_slice("maps")[row : row + 1][0]
        hw = (int(s.hw[row, 0]), int(s.hw[row, 1]))
        return Record(s.keys[row], m, hw, bool(s.valid[row]), bool(s.empty[row]), s.info[row])

    def info(self) -> dict[str, Any]:
        """Summary (`layout.summarize`): metadata, records, valid/empty/duplicate/failed counts, shards,
        bytes on disk, per-writer counts."""
        return summarize(self.root)

    def verify(self, expected_keys: Iterable[str] | None = None) -> VerifyReport:
        """Check every shard (readable, digest, consistent columns) and every map (finite, non-negative,
        sums to 1 if valid or 0 if invalid, store grid); with expected_keys, list those without a record."""
        fresh = InteractionStore(self.root, strict=False)
        report = VerifyReport(
            root=str(self.root),
            records=len(fresh),
            shards=len(fresh._shards) + len(fresh._corrupt),
            corrupt=[p for p in [fresh.identity] if p] + fresh._corrupt,
            duplicates=list(fresh._duplicates),
            stale_tmp=[str(p) for p in stale_tmp_paths(self.root)],
            failed=[f"{f.get('path') or f.get('key')}: {f.get('error')}" for f in read_failures(self.root)],
        )
        for shard_id, shard in enumerate(fresh._shards):
            maps = fresh._handle(shard_id).get_tensor("maps").double()
            if tuple(maps.shape[1:]) != tuple(fresh.grid):
                report.corrupt.append(
                    f"{shard.path}: maps {tuple(maps.shape[1:])} != store grid {fresh.grid}"
                )
                continue
            sums = maps.sum(dim=(1, 2))
            good = torch.isfinite(maps).flatten(1).all(1) & (maps.flatten(1).min(1).values >= 0)
            good &= (sums - shard.valid.double()).abs() < 1e-4
            report.bad_maps += [
                f"{k} ({shard.path.name})" for k, g in zip(shard.keys, good.tolist(), strict=True) if not g
            ]
        if expected_keys is not None:
            report.missing = sorted(set(expected_keys) - set(fresh._index))
        return report


@dataclass
class CompactReport:
    """What `compact` did: duplicates removed, differing duplicates kept, files removed or rewritten."""

    removed_duplicates: int = 0
    differing: list[str] = field(default_factory=list)
    removed_tmp: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    metadata_restored: bool = False

    def summary(self, root: Path | str) -> str:
        lines = [
            f"{root}: removed {self.removed_duplicates} duplicate records and {len(self.removed_tmp)} "
            f"temporary files; rewrote {len(self.rewritten)} shards"
            + ("; rewrote store.json from the shards' copy" if self.metadata_restored else "")
        ]
        if self.differing:
            lines.append(
                f"  {len(self.differing)} keys have records that differ (the teacher is not deterministic?); "
                "kept all of them: `lfi store compact --keep-first` keeps the first, which readers use"
            )
            lines += [f"  differing: {k}" for k in self.differing[:20]]
        return "\n".join(lines)


def _restore_metadata(root: Path) -> bool:
    """Rewrite a missing or damaged store.json from the copy in the first readable shard; True if done."""
    try:
        read_metadata(root)
        return False
    except (StoreCorruptError, FileNotFoundError) as error:
        for path in shard_paths(root):
            try:
                meta = read_header(path).store
            except StoreCorruptError:
                continue
            tmp = root / f"{TMP_PREFIX}{uuid.uuid4().hex}.json"
            fsync_write(tmp, json.dumps(meta, indent=1, sort_keys=True).encode())
            os.replace(tmp, metadata_path(root))
            return True
        raise StoreCorruptError(
            f"{metadata_path(root)}: missing or damaged, and no readable shard holds a copy; "
            "delete the store folder and run `lfi extract` again"
        ) from error


def _same(a: Record, b: Record) -> bool:
    return (
        torch.equal(a.map, b.map)
        and (a.hw, a.valid, a.empty) == (b.hw, b.valid, b.empty)
        and _jsonable(a.info) == _jsonable(b.info)
    )


def compact(root: Path | str, keep_first: bool = False) -> CompactReport:
    """Repair what concurrent or interrupted writers can leave, under the store's lock.

    Removes leftover temporary files; rewrites a damaged or missing store.json from the copy every shard
    carries; removes a key's later records when they equal its first (the one readers use), and with
    `keep_first` also when they differ. Each changed shard is rewritten under a new name before the old one
    is deleted, so a kill in between leaves duplicates (compact again), never a lost record.
    Corrupt shards are left alone: `verify` names them.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such store folder")
    report = CompactReport()
    with store_lock(root):
        for tmp in stale_tmp_paths(root):
            tmp.unlink(missing_ok=True)
            report.removed_tmp.append(str(tmp))
        report.metadata_restored = _restore_metadata(root)
        store = InteractionStore(root, strict=False)
        drop: dict[int, set[int]] = {}
        for shard_id, shard in enumerate(store._shards):
            for row, key in enumerate(shard.keys):
                first = store._index[key]
                if first == (shard_id, row):
                    continue
                if keep_first or _same(store[key], store._record(shard_id, row)):
                    drop.setdefault(shard_id, set()).add(row)
                    report.removed_duplicates += 1
                else:
                    report.differing.append(key)
        for shard_id, rows in drop.items():
            shard = store._shards[shard_id]
            kept = [store._record(shard_id, r) for r in range(len(shard.keys)) if r not in rows]
            if kept:  # the new name sorts right after the old one: which record is first does not change
                _commit_shard(root, f"{shard.path.stem}c{SHARD_SUFFIX}", kept, store.metadata)
            store._handles.pop(shard_id, None)
            shard.path.unlink()
            report.rewritten.append(shard.path.name)
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
