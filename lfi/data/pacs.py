"""PACS (Li et al., ICCV 2017): 4 domains x 7 classes, with the official kfold split lists.

Layout (inside ``PACS/``): ``<domain>/<class>/<file>`` and
``splits/<domain>_{train,crossval,test}_kfold.txt``, one ``<domain>/<class>/<file> <label>`` per line with
labels 1..7 (the classes in alphabetical order). The ``test`` list of a domain holds the whole domain (the
zero-shot protocol tests on every image of an unseen domain); ``train`` + ``crossval`` partition it.

Labels come from the class folder (0..6, alphabetical, = list label - 1). The official
``art_painting_crossval_kfold.txt`` labels one dog image ``0``, outside 1..7 (a known erratum of the lists):
such a label is replaced by the folder's with a warning; a list label inside 1..7 that contradicts the folder
is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from lfi.catalog import PACS_DOMAINS
from lfi.data.base import ImageDataset, Record
from lfi.data.domainbed import check_domains
from lfi.data.source import FileSource, open_source

DOMAINS = PACS_DOMAINS
CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
SPLITS = ("train", "crossval", "test")


def read_split_list(source: FileSource, domain: str, split: str) -> list[Record]:
    """Records of ``splits/<domain>_<split>_kfold.txt``, labels 0..6 (see the module doc for errata)."""
    rel = f"splits/{domain}_{split}_kfold.txt"
    origin = f"{source.describe()}:{rel}"
    records = []
    for lineno, line in enumerate(source.read_text(rel).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0].count("/") != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{origin}:{lineno}: expected '<domain>/<class>/<file> <label>', got {line!r}")
        path, listed = parts[0], int(parts[1])
        d, cls, _ = path.split("/")
        if d != domain or cls not in CLASSES:
            raise ValueError(f"{origin}:{lineno}: {path!r} is not <{domain}>/<one of {list(CLASSES)}>/<file>")
        label = CLASSES.index(cls)
        if listed != label + 1:
            if 1 <= listed <= len(CLASSES):
                raise ValueError(f"{origin}:{lineno}: label {listed} contradicts the class folder {cls!r}")
            warnings.warn(
                f"{origin}:{lineno}: label {listed} is outside 1..7; using the class folder {cls!r}",
                stacklevel=3,
            )
        records.append(Record(path, label, domain=domain))
    return records


class PACS(ImageDataset):
    """PACS images of `domains` (None = all four) in the official kfold `split`: 'train', 'crossval'
    (alias 'val') or 'test' (= the whole domain). Samples as in `lfi.data.base`, with no boxes and a 'domain'.

    root: a folder holding ``PACS/`` or the PACS zip (e.g. the shared data root), a zip, or ``PACS`` itself.
    """

    def __init__(
        self,
        root: Path | str,
        domains: Sequence[str] | str | None = None,
        split: str = "train",
        return_bytes: bool = False,
    ) -> None:
        split = "crossval" if split == "val" else split
        if split not in SPLITS:
            raise ValueError(f"PACS split must be one of {SPLITS} (or 'val'), got {split!r}")
        self.domains = check_domains(domains, DOMAINS, "PACS")
        source = open_source(root, "PACS", "PACS*.zip", "splits")
        records = [r for d in self.domains for r in read_split_list(source, d, split)]
        super().__init__(source, records, list(CLASSES), return_bytes)
