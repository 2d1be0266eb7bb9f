"""TinyImageNet-200 (64x64, 200 classes, one box per image), from its zips or an extracted folder.

Layout (inside ``tiny-imagenet-200/``): ``wnids.txt`` (the label order, 0..199), ``words.txt``
(wnid -> names), ``train/<wnid>/images/<wnid>_<i>.JPEG`` with boxes in ``train/<wnid>/<wnid>_boxes.txt``, and
``val/images/val_<i>.JPEG`` with labels and boxes in ``val/val_annotations.txt``. The train set may be split
over several shard zips; they are read as one. ``wnids.txt`` lives beside ``val/``: reading the train shards
alone needs the val zip (or folder) too.

Boxes in the annotation files are inclusive pixel indices ``x0 y0 x1 y1`` (a full 64 px image is
``0 0 63 63``); they are returned as continuous XYXY coordinates ``[x0, y0, x1 + 1, y1 + 1]`` so that a box
covers exactly the pixels it names.
"""

from __future__ import annotations

from pathlib import Path

from lfi.data.base import ImageDataset, Record
from lfi.data.source import FileSource, open_source

SPLITS = ("train", "val")


def _box(fields: list[str], origin: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in fields)
    except ValueError as e:
        raise ValueError(f"{origin}: expected 4 integer box coordinates, got {fields}") from e
    return (x0, y0, x1 + 1.0, y1 + 1.0)


def _parse_annotations(text: str, origin: str, n_fields: int) -> dict[str, list[str]]:
    """Tab-separated lines 'file<TAB>f1<TAB>...' -> {file: [f1, ...]}; checks the field count."""
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != n_fields + 1:
            raise ValueError(f"{origin}:{lineno}: expected {n_fields + 1} fields, got {line!r}")
        out[parts[0]] = parts[1:]
    return out


def _class_names(source: FileSource, wnids: list[str]) -> list[str]:
    if not source.exists("words.txt"):
        return list(wnids)
    words = dict(line.split("\t", 1) for line in source.read_text("words.txt").splitlines() if "\t" in line)
    return [words.get(w, w).strip() for w in wnids]


class TinyImageNet(ImageDataset):
    """TinyImageNet-200 `split` ('train' or 'val'); samples as in `lfi.data.base`, one box each, plus the
    class's 'wnid' (its ImageNet id, which lets ImageNet teachers find the class exactly).

    root: a folder with the ``tiny-imagenet-200-*.zip`` files (or the shared data root), one zip, or an
    extracted ``tiny-imagenet-200`` folder.
    """

    def __init__(self, root: Path | str, split: str = "train", return_bytes: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"TinyImageNet split must be one of {SPLITS}, got {split!r}")
        source = open_source(root, "tiny-imagenet-200", "tiny-imagenet-200*.zip", "wnids.txt")
        if not source.exists("wnids.txt"):
            raise FileNotFoundError(
                f"wnids.txt not found in {source.describe()}: the train shards need the val zip beside them"
            )
        self.wnids = [w.strip() for w in source.read_text("wnids.txt").split() if w.strip()]
        index = {w: i for i, w in enumerate(self.wnids)}
        records = self._train(source, index) if split == "train" else self._val(source, index)
        super().__init__(source, records, _class_names(source, self.wnids), return_bytes)

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        sample["wnid"] = self.wnids[sample["label"]]
        return sample

    @staticmethod
    def _val(source: FileSource, index: dict[str, int]) -> list[Record]:
        origin = f"{source.describe()}:val/val_annotations.txt"
        ann = _parse_annotations(source.read_text("val/val_annotations.txt"), origin, 5)
        records = []
        for name, (wnid, *box) in ann.items():
            if wnid not in index:
                raise ValueError(f"{origin}: {name} has wnid {wnid!r}, which is not in wnids.txt")
            records.append(Record(f"val/images/{name}", index[wnid], (_box(box, origin),)))
        return sorted(records, key=lambda r: int(Path(r.relpath).stem.split("_")[-1]))

    @staticmethod
    def _train(source: FileSource, index: dict[str, int]) -> list[Record]:
        boxes: dict[str, list[str]] = {}
        images = []
        for rel in source.files("train/"):
            parts = rel.split("/")
            if rel.endswith("_boxes.txt"):  # each train shard holds the boxes of its own images
                for copy in source.read_all(rel):
                    boxes.update(_parse_annotations(copy.decode(), f"{source.describe()}:{rel}", 4))
            elif len(parts) == 4 and parts[2] == "images" and parts[3].endswith(".JPEG"):
                if parts[1] not in index:
                    raise ValueError(f"{source.describe()}:{rel}: class {parts[1]!r} is not in wnids.txt")
                images.append(rel)
        records = []
        for rel in images:
            name = rel.rsplit("/", 1)[-1]
            if name not in boxes:
                raise ValueError(f"{source.describe()}: no box for {rel} in its class's *_boxes.txt")
            records.append(Record(rel, index[rel.split("/")[1]], (_box(boxes[name], rel),)))
        # Deterministic order, independent of zip member order: class, then image number.
        return sorted(records, key=lambda r: (r.label, int(Path(r.relpath).stem.split("_")[-1])))
