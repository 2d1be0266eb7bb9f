"""On-disk layout of an interaction store: paths, store.json, shard headers and digests, the writers' lock.

Standard library only, so that `lfi store info` answers without importing torch (about 2 s to import on
two cores) and so that everything that checks a store agrees on one definition of a shard's digest.

A shard is a safetensors file: 8 bytes (little-endian header length n), n bytes of JSON header (per tensor:
dtype, shape, byte offsets; plus string metadata ``__metadata__``), then the tensor bytes. Its metadata holds
the record keys, the per-record teacher info, a copy of the store's metadata and ``sha256``, the digest of
everything else in the file (`shard_digest`), so an edited key, info or map is caught like a flipped bit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as _pkg_metadata
from pathlib import Path
from typing import Any

from lfi.files import fsync_write as fsync_write  # the one definition, re-exported for the store's writers

FORMAT = 2  # 2: the digest covers keys, info and store metadata (format 1 covered the tensors only)
META_FILE = "store.json"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".safetensors"
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"
FAILED_FILE = "failed.jsonl"
TENSORS = ("maps", "hw", "valid", "empty")
#: store.json fields written once at creation: a random uid (so two stores written with the same settings
#: still differ, and a shard copied from one into the other is caught) and the digest of every other field
#: (so an edit of store.json is caught even in a store without shards). Stores written before them have neither.
IDENTITY = ("store_uid", "store_id")


class StoreMetadataError(ValueError):
    """The store was written with metadata other than what the caller expects."""


class StoreCorruptError(ValueError):
    """A store file cannot be read or fails its digest; the message names the file and the repair."""


def lfi_version() -> str:
    """The installed lfi's version, from package metadata (importing `lfi` itself would load the models)."""
    try:
        return _pkg_metadata.version("lfi")
    except _pkg_metadata.PackageNotFoundError:
        return "unknown"


def metadata_path(root: Path | str) -> Path:
    return Path(root) / META_FILE


def read_metadata(root: Path | str) -> dict[str, Any]:
    """The store-level metadata of the store at `root`; errors name the file and the repair."""
    path = metadata_path(root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no interaction store here (missing {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorruptError(
            f"{path}: damaged, not valid JSON ({e}); run `lfi store compact {path.parent}` to rewrite it "
            "from the copy kept in every shard"
        ) from e
    if not isinstance(meta, dict):
        raise StoreCorruptError(f"{path}: expected a JSON object; run `lfi store compact {path.parent}`")
    if meta.get("format") != FORMAT:
        raise StoreMetadataError(
            f"{path}: store format {meta.get('format')!r}, this lfi reads format {FORMAT}; "
            "extract again into a new store folder"
        )
    return meta


def identity_digest(meta: dict[str, Any]) -> str:
    """sha256 (16 hex) of every store.json field but `store_id` itself."""
    fields = {k: v for k, v in meta.items() if k != "store_id"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def with_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with a new store's identity fields (`IDENTITY`): call once, when a store is created."""
    meta = {k: v for k, v in meta.items() if k not in IDENTITY} | {"store_uid": uuid.uuid4().hex}
    return meta | {"store_id": identity_digest(meta)}


def identity_problem(meta: dict[str, Any], path: Path) -> str | None:
    """Why store.json at `path` is not the one its store was created with, or None (also for a store written
    before identities, which has no `store_id`)."""
    if "store_id" not in meta or meta["store_id"] == identity_digest(meta):
        return None
    return (
        f"{path}: field 'store_id' {meta['store_id']!r} does not match the other fields (digest "
        f"{identity_digest(meta)!r}): store.json was edited after the store was written; put the original back "
        f"(or delete it and run `lfi store compact {path.parent}`, which rewrites it from the shards' copy)"
    )


def metadata_differences(
    ours: dict[str, Any], theirs: dict[str, Any], our_name: str, their_name: str
) -> list[str]:
    """One line per field that two metadata dicts (JSON-normalised) disagree on, naming both values."""

    def shown(meta: dict[str, Any], key: str) -> str:
        return repr(meta[key]) if key in meta else "no such field"

    return [
        f"field {k!r}: {our_name} has {shown(ours, k)}, {their_name} has {shown(theirs, k)}"
        for k in sorted(set(ours) | set(theirs))
        if k not in ours or k not in theirs or ours[k] != theirs[k]
    ]


def shard_paths(root: Path | str) -> list[Path]:
    """Committed shards, sorted by name (the order in which a repeated key's first record wins)."""
    folder = Path(root) / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(TMP_PREFIX))


def stale_tmp_paths(root: Path | str) -> list[Path]:
    """Temporary files of interrupted writes (store.json in the root, shards in shards/)."""
    root = Path(root)
    return sorted([*root.glob(f"{TMP_PREFIX}*"), *(root / SHARD_DIR).glob(f"{TMP_PREFIX}*")])


def writer_of(shard: Path) -> str:
    """The writer that committed a shard: its file name without the unique suffix."""
    return shard.name.rsplit("-", 1)[0]


@dataclass
class ShardHeader:
    """A shard's parsed header. tensors: name -> (dtype, shape, (begin, end) from `data_start`)."""

    path: Path
    keys: list[str]
    info: list[dict[str, Any]]
    store: dict[str, Any]
    digest: str
    tensors: dict[str, tuple[str, list[int], tuple[int, int]]]
    header: dict[str, Any]
    data_start: int

    def column(self, name: str, data: bytes) -> bytes:
        begin, end = self.tensors[name][2]
        return data[self.data_start + begin : self.data_start + end]


def _corrupt(path: Path, problem: str) -> StoreCorruptError:
    return StoreCorruptError(
        f"{path}: {problem}; delete this shard and run `lfi extract` again with the same arguments "
        "(it resumes and redoes only the missing records)"
    )


def parse_header(path: Path, head: bytes) -> ShardHeader:
    """Parse a shard header from the first bytes of its file (`head`: at least the whole header)."""
    if len(head) < 8:
        raise _corrupt(path, "unreadable shard (shorter than a safetensors header)")
    (n,) = struct.unpack("<Q", head[:8])
    if len(head) < 8 + n:
        raise _corrupt(path, "unreadable shard (truncated header)")
    try:
        header = json.loads(head[8 : 8 + n])
        meta = header["__metadata__"]
        if meta.get("format") != str(FORMAT):
            raise StoreMetadataError(
                f"{path}: shard format {meta.get('format')!r}, this lfi reads format {FORMAT}; "
                "extract again into a new store folder"
            )
        tensors = {
            name: (header[name]["dtype"], list(header[name]["shape"]), tuple(header[name]["data_offsets"]))
            for name in TENSORS
        }
        parsed = ShardHeader(
            path,
            json.loads(meta["keys"]),
            json.loads(meta["info"]),
            json.loads(meta["store"]),
            meta["sha256"],
            tensors,
            header,
            8 + n,
        )
    except StoreMetadataError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise _corrupt(path, f"unreadable shard header ({type(e).__name__}: {e})") from e
    lengths = {len(parsed.keys), len(parsed.info), *(t[1][0] for t in tensors.values())}
    if len(lengths) != 1:
        raise _corrupt(path, f"columns have different lengths {sorted(lengths)}")
    return parsed


def shard_digest(header: dict[str, Any], data: bytes, data_start: int) -> str:
    """sha256 of a shard's whole content but the digest itself: its metadata (keys, info, store metadata),
    every tensor's dtype and shape, and every tensor's bytes."""
    meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != "sha256"}
    layout = {k: [v["dtype"], v["shape"]] for k, v in header.items() if k != "__metadata__"}
    h = hashlib.sha256(json.dumps({"metadata": meta, "tensors": layout}, sort_keys=True).encode())
    for name in sorted(layout):
        begin, end = header[name]["data_offsets"]
        h.update(data[data_start + begin : data_start + end])
    return h.hexdigest()


def read_shard(path: Path) -> tuple[ShardHeader, bytes]:
    """Read a whole shard and check its digest: (header, file bytes); StoreCorruptError naming it if not."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _corrupt(path, f"unreadable shard ({e})") from e
    shard = parse_header(path, data)
    end = max((t[2][1] for t in shard.tensors.values()), default=0)
    if len(data) != shard.data_start + end:
        raise _corrupt(
            path, f"truncated or extended shard ({len(data)} bytes, header says {shard.data_start + end})"
        )
    if shard_digest(shard.header, data, shard.data_start) != shard.digest:
        raise _corrupt(path, "digest mismatch (the file changed after it was written)")
    return shard, data


def read_header(path: Path) -> ShardHeader:
    """Only the header of a shard (no digest check): what `summarize` and the writers' key scans need."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            head += f.read(n)
    except OSError as e:
        raise _corrupt(path, f"unreadable shard ({e})") from e
    return parse_header(path, head)


@contextlib.contextmanager
def store_lock(root: Path | str) -> Iterator[None]:
    """Exclusive lock on the store (flock on ``<root>/.lock``): writers hold it while they commit a shard,
    `compact` while it rewrites. The kernel releases it when its process dies, so a kill never leaves it."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_failure(root: Path | str, entry: dict[str, Any]) -> None:
    """Add one line to ``<root>/failed.jsonl`` (images `lfi extract --on-error skip` could not process).

    One write of one line with O_APPEND: lines of concurrent writers never interleave."""
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(Path(root) / FAILED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_failures(root: Path | str) -> list[dict[str, Any]]:
    """Entries of ``<root>/failed.jsonl`` (empty when no image failed)."""
    path = Path(root) / FAILED_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(root: Path | str) -> dict[str, Any]:
    """What `lfi store info` prints, from store.json and the shard headers (no torch, no digest check:
    `lfi store verify` does that): records, valid and empty counts, shards, bytes, per-writer counts."""
    root = Path(root)
    meta = read_metadata(root)
    seen: set[str] = set()
    valid = empty = duplicates = size = 0
    writers: dict[str, int] = {}
    paths = shard_paths(root)
    for path in paths:
        shard = read_header(path)
        with open(path, "rb") as f:
            flags = {}
            for name in ("valid", "empty"):
                begin, end = shard.tensors[name][2]
                f.seek(shard.data_start + begin)
                flags[name] = f.read(end - begin)
        for row, key in enumerate(shard.keys):
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            valid += flags["valid"][row] != 0
            empty += flags["empty"][row] != 0
            writers[writer_of(path)] = writers.get(writer_of(path), 0) + 1
        size += path.stat().st_size
    return {
        "root": str(root),
        "metadata": meta,
        "records": len(seen),
        "valid": valid,
        "empty": empty,
        "duplicates": duplicates,
        "failed": len(read_failures(root)),
        "shards": len(paths),
        "bytes": size,
        "writers": writers,
    }
