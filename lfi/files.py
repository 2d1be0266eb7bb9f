"""Result files written whole or not at all, and a folder held by one writer.

    atomic_write(run / "metrics.json", text)          # readers see the old file or the new one, never half
    with atomic_path(run / "model.safetensors") as tmp:
        save_file(weights, str(tmp))                   # any writer that takes a path
    with exclusive_lock(run / ".lock", f"{run} is being written by another `lfi train`"):
        ...                                            # a second holder is refused at once

Standard library only (the lowest floor: config, data, extract, evaluate, train and show all write results).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` and flush it to disk before returning."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _tmp_name(path: Path) -> Path:
    # hidden, in the same folder (os.replace is atomic within one file system), and not ending in the real
    # suffix, so that globs such as `*.safetensors` or `**/metrics.json` never pick up a half-written file
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path`: write it inside the block; on success it is synced and renamed
    onto `path` (atomic on POSIX), on an error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically (`atomic_path`); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fsync_write(tmp, data.encode() if isinstance(data, str) else data)
    return path


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent) for the block; if another process holds it,
    raise BlockingIOError(`busy` + the holder's pid) at once instead of waiting. The kernel releases the
    lock when its holder dies, so a killed process never leaves a stale lock behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise BlockingIOError(f"{busy} (pid {holder} holds {path})") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
