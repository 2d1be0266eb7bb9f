"""Your own images: one folder per class (torchvision's ImageFolder layout), from a folder or a zip.

Layout: ``DIR/<class>/<image>``; images may also sit deeper inside their class folder. DIR may be:
  - the folder of class folders itself;
  - a zip of the same layout, with or without enclosing folders (``photos.zip`` holding ``photos/<class>/...``);
  - a folder (or zip) of splits, ``DIR/train/<class>/...``, ``DIR/val/<class>/...``, ``DIR/test/<class>/...``:
    the `split` asked for picks its sub-folder ('val' also finds 'valid' or 'validation').

Classes: the class folders' names, sorted (torchvision's order), or the order of ``DIR/classes.txt`` (one folder
name a line; blank lines and lines starting with '#' are skipped) when it exists. A validation or test set gets
the training set's class list (`classes`), so a label means the same class in every set; it must hold a folder
for every one of those classes and none other.

Boxes (optional, for the oracle teacher): ``DIR/boxes.txt``, one ``<class>/<image> x0 y0 x1 y1`` per line,
XYXY in pixels of the image; one line per object.

Samples as in `lfi.data.base`: label, class_name (the folder name with '_' read as a space, e.g.
'golden retriever': the name the teachers look up or put into their prompt), relpath '<class>/<image>' (relative
to the class folders' parent, so the store keys do not depend on where the set lives), key, boxes.

Errors name the file or folder and what was expected: images outside class folders, a class folder without
images, files that are not images (by their extension; a file with an image extension that does not decode is
named when it is read), a classes.txt that disagrees with the folders. Images may have any size and mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from lfi.data.base import ImageDataset, Record
from lfi.data.source import FileSource, _open_zip, safe_members

#: File endings read as images (torchvision's IMG_EXTENSIONS, plus GIF and JFIF, which PIL reads too).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".ppm",
    ".pgm",
    ".pbm",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)
#: Folder names of a split layout (DIR/train, DIR/val, ...), and the names each split also answers to.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
#: Files skipped everywhere: system clutter.
IGNORED_FILES = ("Thumbs.db", "desktop.ini")
CLASSES_FILE = "classes.txt"
BOXES_FILE = "boxes.txt"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _ignored(rel: str) -> bool:
    """Hidden files and folders (.DS_Store, .git), macOS zip clutter (__MACOSX), Thumbs.db, desktop.ini."""
    parts = PurePosixPath(rel).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in IGNORED_FILES


class _Tree:
    """The files and folders of a folder or a zip, as relative POSIX paths (clutter left out)."""

    def __init__(self, files: Iterable[str], dirs: Iterable[str]) -> None:
        self.files = sorted(f for f in files if not _ignored(f))
        self.dirs = {d for d in dirs if d and not _ignored(d)}
        for f in self.files:  # zips may leave out folder entries: every file's parents are folders
            self.dirs.update(p.as_posix() for p in PurePosixPath(f).parents if p.as_posix() != ".")

    @classmethod
    def of_folder(cls, root: Path) -> _Tree:
        files, dirs = [], []
        for dirpath, dirnames, names in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            dirs += [(rel / d).as_posix() for d in dirnames]
            files += [(rel / n).as_posix() for n in names]
        return cls(files, dirs)

    @classmethod
    def of_zip(cls, path: Path) -> _Tree:
        with _open_zip(path) as zf:
            names = safe_members(path, zf.namelist())
        return cls(
            [n for n in names if not n.endswith("/")], [n.rstrip("/") for n in names if n.endswith("/")]
        )

    @staticmethod
    def _under(base: str) -> str:
        return f"{base}/" if base else ""

    def subdirs(self, base: str) -> list[str]:
        """Names of the folders directly inside `base` ('' = the top)."""
        prefix = self._under(base)
        return sorted(
            d[len(prefix) :] for d in self.dirs if d.startswith(prefix) and "/" not in d[len(prefix) :]
        )

    def files_in(self, base: str) -> list[str]:
        """Names of the files directly inside `base`."""
        prefix = self._under(base)
        return [f[len(prefix) :] for f in self.files if f.startswith(prefix) and "/" not in f[len(prefix) :]]

    def files_under(self, base: str) -> list[str]:
        """Paths, relative to `base`, of every file anywhere below it."""
        prefix = self._under(base)
        return [f[len(prefix) :] for f in self.files if f.startswith(prefix)]


def _where(root: Path, base: str) -> str:
    if root.is_file():
        return f"{root}:{base}" if base else str(root)
    return str(root / base) if base else str(root)


def _find_class_root(tree: _Tree, root: Path, split: str | None, known: Sequence[str]) -> str:
    """The folder (relative to `root`) whose sub-folders are the classes: down split folders and single
    enclosing folders (a zip's top folder), stopping at a classes.txt or at images."""
    base = ""
    while True:
        dirs, files = tree.subdirs(base), tree.files_in(base)
        stop = any(is_image_name(f) for f in files) or CLASSES_FILE in files
        split_names = {name for names in SPLIT_FOLDERS.values() for name in names}
        if dirs and not stop and set(dirs) <= split_names and not set(dirs) & set(known):
            wanted = [d for d in dirs if split is not None and d in SPLIT_FOLDERS.get(split, (split,))]
            if not wanted:
                raise ValueError(
                    f"{_where(root, base)}: holds split folders {dirs}, not class folders, and none for split "
                    f"{split!r}; point at one of them (e.g. {_where(root, (base + '/' if base else '') + dirs[0])})"
                )
            base = f"{base}/{wanted[0]}" if base else wanted[0]
            continue
        if len(dirs) == 1 and not stop and dirs[0] not in known:
            inner = f"{base}/{dirs[0]}" if base else dirs[0]
            if tree.subdirs(inner):  # an enclosing folder (its sub-folders are the classes)
                base = inner
                continue
        return base


def read_classes_file(text: str, origin: str) -> list[str]:
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{origin}: classes listed twice: {repeated}")
    if not names:
        raise ValueError(f"{origin}: lists no class (expected one class folder name a line)")
    return names


def read_boxes_file(text: str, origin: str, relpaths: set[str]) -> dict[str, list[tuple[float, ...]]]:
    """``<class>/<image> x0 y0 x1 y1`` lines -> {relpath: [(x0, y0, x1, y1), ...]}."""
    boxes: dict[str, list[tuple[float, ...]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().rsplit(maxsplit=4)
        try:
            rel, coords = parts[0], tuple(float(v) for v in parts[1:])
        except ValueError:
            coords = ()
        if len(parts) != 5 or len(coords) != 4 or coords[2] <= coords[0] or coords[3] <= coords[1]:
            raise ValueError(
                f"{origin}:{lineno}: expected '<class>/<image> x0 y0 x1 y1' (pixels, x1 > x0, y1 > y0), got {line!r}"
            )
        if rel not in relpaths:
            raise ValueError(
                f"{origin}:{lineno}: {rel!r} is not an image of this set (paths are '<class>/<image>')"
            )
        boxes.setdefault(rel, []).append(coords)
    return boxes


def _mismatch(classes: list[str], folders: list[str]) -> tuple[list[str], list[str]]:
    """(classes without a folder, folders that are not classes)."""
    return [c for c in classes if c not in folders], [f for f in folders if f not in classes]


def _open_tree(root: Path) -> _Tree:
    """The file tree of a folder or a zip of class folders."""
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise ValueError(f"{root}: expected a folder or a .zip of class folders (<class>/<image>)")
        return _Tree.of_zip(root)
    if root.is_dir():
        return _Tree.of_folder(root)
    raise FileNotFoundError(f"{root}: no such folder or zip (expected one sub-folder of images per class)")


def _check_class_root(here: str, folders: list[str], files: list[str]) -> None:
    """The class root holds class folders and no loose images."""
    loose = [f for f in files if is_image_name(f)]
    if loose or not folders:
        found = (
            f"images directly in it ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''})"
            if loose
            else "no sub-folders"
        )
        raise ValueError(
            f"{here}: {found}; expected one sub-folder of images per class ({here}/<class>/<image>)"
        )


def _resolve_classes(
    classes: Sequence[str] | None, folders: list[str], here: str, source: FileSource, listed: bool
) -> list[str]:
    """The class list: the given (training) classes, else classes.txt (`listed`), else the folders; each
    checked against the class folders."""
    if classes is not None:
        classes = list(classes)
        missing, extra = _mismatch(classes, folders)
        if missing or extra:
            raise ValueError(
                f"{here}: class folders do not match the training classes {classes}: "
                + "; ".join(
                    (
                        [f"no folder for {missing} (every class of training needs its folder here)"]
                        if missing
                        else []
                    )
                    + ([f"{extra} are not training classes"] if extra else [])
                )
            )
        return classes
    if not listed:
        return folders
    origin = f"{here}/{CLASSES_FILE}"
    classes = read_classes_file(source.read_text(CLASSES_FILE), origin)
    missing, extra = _mismatch(classes, folders)
    if missing or extra:
        raise ValueError(
            f"{origin}: disagrees with the class folders: "
            + "; ".join(
                ([f"no folder for listed classes {missing}"] if missing else [])
                + ([f"folders {extra} are not listed"] if extra else [])
            )
        )
    return classes


def _image_records(tree: _Tree, base: str, here: str, classes: list[str]) -> list[Record]:
    """One record (relpath, label) per image of each class folder; a class without images, or a file that
    is not an image, is an error."""
    records, not_images = [], []
    for label, name in enumerate(classes):
        paths = tree.files_under(f"{base}/{name}" if base else name)
        images = [p for p in paths if is_image_name(p)]
        not_images += [f"{name}/{p}" for p in paths if not is_image_name(p)]
        if not images:
            raise ValueError(
                f"{here}/{name}: class folder {name!r} holds no images (expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        records += [Record(f"{name}/{p}", label) for p in images]
    if not_images:
        shown = ", ".join(not_images[:3]) + (
            f" and {len(not_images) - 3} more" if len(not_images) > 3 else ""
        )
        raise ValueError(
            f"{here}: files that are not images in class folders: {shown}; expected only files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (move the others out)"
        )
    return records


class ImageFolder(ImageDataset):
    """One class per sub-folder of `root` (a folder or a zip; the module doc gives the layouts).

    split: 'train', 'val' or 'test': picks DIR/<split> when `root` is a folder of splits (None: `root` must
    hold the class folders). classes: the class list the labels index (a training set's `classes`, for its
    validation and test sets); None = classes.txt, else the sorted folder names.
    """

    def __init__(
        self,
        root: Path | str,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        return_bytes: bool = False,
    ) -> None:
        root = Path(root)
        tree = _open_tree(root)
        base = _find_class_root(tree, root, split, classes or ())
        here = _where(root, base)
        prefix = f"{base}/" if base else ""
        source = FileSource([root], prefix=prefix) if root.is_file() else FileSource(folder=root / base)
        folders, files = tree.subdirs(base), tree.files_in(base)
        _check_class_root(here, folders, files)
        self.classes_file = CLASSES_FILE in files
        classes = _resolve_classes(classes, folders, here, source, self.classes_file)
        records = _image_records(tree, base, here, classes)
        self.has_boxes = BOXES_FILE in files
        if self.has_boxes:
            boxes = read_boxes_file(
                source.read_text(BOXES_FILE), f"{here}/{BOXES_FILE}", {r.relpath for r in records}
            )
            records = [Record(r.relpath, r.label, tuple(boxes.get(r.relpath, ()))) for r in records]
        self.root, self.split = root, split
        super().__init__(source, records, list(classes), return_bytes)

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        sample["class_name"] = sample["class_name"].replace("_", " ")
        return sample
