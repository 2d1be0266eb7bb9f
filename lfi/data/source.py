"""Read a dataset's files from its official zip archives or from an extracted folder, by one relative path.

A dataset names its files by a *dataset-relative* path such as ``val/images/val_0.JPEG``. `FileSource` maps
that path to the bytes, whether they sit in one or several zips (inner names ``<prefix>/<relpath>``) or in
an extracted folder (``<folder>/<relpath>``). Zips are opened lazily, once per process, so a `FileSource`
can be pickled into DataLoader workers without sharing a file handle across a fork.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip; a truncated or damaged one is a ValueError naming it (zipfile's own names no file)."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ValueError(
            f"{path}: not a readable zip archive ({e}); it is truncated or damaged: re-copy it "
            "(compare it with the dataset's checksums)"
        ) from e


def safe_members(path: Path, names: Sequence[str]) -> list[str]:
    """The member names of zip `path` that stay inside it; each absolute one (``/x``, ``C:/x``) or one with a
    ``..`` part is left out with a warning naming the archive and the member (never read, never written)."""
    safe = []
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            warnings.warn(
                f"{path}: member {name!r} points outside the archive (absolute or '..'); left out",
                stacklevel=2,
            )
        else:
            safe.append(name)
    return safe


class FileSource:
    """Union of zips and/or one folder, addressed by dataset-relative paths.

    zips: archives whose members start with `prefix` (e.g. ``"tiny-imagenet-200/"``); `read` takes the last
    zip holding a name, `read_all` every copy (shards may each carry their own part of an annotation file).
    folder: an extracted copy whose files are ``folder / relpath``.
    """

    def __init__(self, zips: Sequence[Path] = (), folder: Path | None = None, prefix: str = "") -> None:
        if not zips and folder is None:
            raise ValueError("FileSource needs at least one zip or a folder")
        self.zips = [Path(z) for z in zips]
        self.folder = Path(folder) if folder is not None else None
        self.prefix = prefix
        self._where: dict[str, list[int]] = {}  # relpath -> zip indices; folder files are not indexed
        for i, z in enumerate(self.zips):
            with _open_zip(z) as zf:
                for name in safe_members(z, zf.namelist()):
                    if name.startswith(prefix) and not name.endswith("/"):
                        self._where.setdefault(name[len(prefix) :], []).append(i)
        self._open: dict[int, zipfile.ZipFile] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state

    def describe(self) -> str:
        """Human-readable origin, for error messages."""
        parts = [str(z) for z in self.zips] + ([str(self.folder)] if self.folder else [])
        return " + ".join(parts)

    def _zip(self, i: int) -> zipfile.ZipFile:
        if self._pid != os.getpid():  # forked worker: never reuse the parent's handles
            self._open, self._pid = {}, os.getpid()
        if i not in self._open:
            self._open[i] = _open_zip(self.zips[i])
        return self._open[i]

    def _read_member(self, i: int, relpath: str) -> bytes:
        try:
            return self._zip(i).read(self.prefix + relpath)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:  # bad CRC, truncated or garbled member
            raise ValueError(
                f"{self.zips[i]}: member {self.prefix + relpath!r} is damaged ({e}); re-copy the zip "
                "(compare it with the dataset's checksums)"
            ) from e

    def exists(self, relpath: str) -> bool:
        if relpath in self._where:
            return True
        return self.folder is not None and (self.folder / relpath).is_file()

    def read(self, relpath: str) -> bytes:
        """Raw bytes of one file; FileNotFoundError names the path and the sources searched."""
        return self.read_all(relpath)[-1]

    def read_all(self, relpath: str) -> list[bytes]:
        """Bytes of every copy of `relpath` (zips in order, then the folder); FileNotFoundError if none."""
        copies = [self._read_member(i, relpath) for i in self._where.get(relpath, [])]
        if self.folder is not None and (self.folder / relpath).is_file():
            copies.append((self.folder / relpath).read_bytes())
        if not copies:
            raise FileNotFoundError(f"{relpath!r} not found in {self.describe()}")
        return copies

    def read_text(self, relpath: str) -> str:
        return self.read(relpath).decode("utf-8")

    def files(self, under: str = "") -> Iterator[str]:
        """Every relative file path starting with `under` (zip members first, then the folder's)."""
        seen = set()
        for rel in self._where:
            if rel.startswith(under):
                seen.add(rel)
                yield rel
        if self.folder is not None:
            base = self.folder / under if under and (self.folder / under).is_dir() else self.folder
            for dirpath, _, names in os.walk(base):
                for n in names:
                    rel = Path(dirpath, n).relative_to(self.folder).as_posix()
                    if rel.startswith(under) and rel not in seen:
                        yield rel


def open_source(root: Path | str, name: str, zip_glob: str, marker: str) -> FileSource:
    """Find a dataset under `root`: its zips, or its extracted folder.

    root may be: a zip file; a folder holding zips that match `zip_glob` (directly or one level down, so the
    shared data root works); or an extracted folder, either ``root/<name>`` or `root` itself, recognised by
    the relative file or folder `marker` inside it. Zip members are expected under ``<name>/``.
    """
    root = Path(root)
    prefix = f"{name}/"
    if root.is_file():
        if root.suffix != ".zip":
            raise ValueError(f"{root}: expected a .zip archive or a folder for dataset {name!r}")
        return FileSource([root], prefix=prefix)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder (dataset {name!r})")
    for folder in (root / name, root):
        if (folder / marker).exists():
            return FileSource(folder=folder)
    zips = sorted(root.glob(zip_glob)) or sorted(root.glob(f"*/{zip_glob}"))
    if zips:
        return FileSource(zips, prefix=prefix)
    raise FileNotFoundError(
        f"{root}: found neither zips matching {zip_glob!r} nor an extracted folder containing {name}/{marker}"
    )
