"""Multi-domain datasets in the DomainBed folder layout: ``<NAME>/<domain>/<class>/<image>``.

Serves VLCS (``VLCS/{CALTECH,LABELME,PASCAL,SUN}/{bird,car,chair,dog,person}/*.jpg``) and PACS read without
its split lists. Labels are the class folder names sorted over *all* domains of the dataset, so a class has
the same label whichever domains are selected (a model trained on one domain can be tested on another).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lfi.catalog import VLCS_DOMAINS
from lfi.data.base import ImageDataset, Record
from lfi.data.source import FileSource, open_source
from lfi.data.subsets import holdout_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("all", "train", "val", "test")


def check_domains(domains: Sequence[str] | str | None, known: Sequence[str], dataset: str) -> list[str]:
    """None -> all known domains; a str -> [it]; unknown names -> ValueError listing the known ones."""
    if domains is None:
        return list(known)
    domains = [domains] if isinstance(domains, str) else list(domains)
    unknown = [d for d in domains if d not in known]
    if unknown or not domains:
        raise ValueError(f"{dataset}: unknown or no domains {unknown or domains}; known: {list(known)}")
    return domains


def scan_domain_folders(
    source: FileSource, domains: Sequence[str], required: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """{domain: [(class folder, relpath), ...]} for every image file ``<domain>/<class>/<file>``, sorted by
    path; FileNotFoundError if a `required` domain has no images."""
    found: dict[str, list[tuple[str, str]]] = {}
    for d in domains:
        files = [(rel.split("/")[1], rel) for rel in source.files(f"{d}/") if rel.count("/") == 2]
        found[d] = sorted((f for f in files if f[1].lower().endswith(IMAGE_SUFFIXES)), key=lambda f: f[1])
        if d in required and not found[d]:
            raise FileNotFoundError(f"{source.describe()}: no images in {d}/<class>/ (DomainBed layout)")
    return found


class DomainFolders(ImageDataset):
    """Images of the selected `domains` of a DomainBed-layout dataset `name` (e.g. 'VLCS').

    root: a folder holding ``<name>/`` (or ``<name>`` itself), or a ``<name>*.zip`` with members under
    ``<name>/``. all_domains: the dataset's domains (fixes the class list across selections).
    split: 'all' (alias 'test': the whole domain, as PACS's 'test', for testing on an unseen domain), or
    'train'/'val' = a seeded stratified holdout of `holdout` of each selected domain's images per class
    (DomainBed holds out 20 % of every environment; its exact seed hash is not reproduced).
    """

    def __init__(
        self,
        root: Path | str,
        name: str,
        all_domains: Sequence[str],
        domains: Sequence[str] | str | None = None,
        split: str = "all",
        holdout: float = 0.2,
        seed: int = 0,
        return_bytes: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"{name} split must be one of {SPLITS}, got {split!r}")
        self.domains = check_domains(domains, all_domains, name)
        source = open_source(root, name, f"{name}*.zip", all_domains[0])
        found = scan_domain_folders(source, all_domains, required=self.domains)
        classes = sorted({c for files in found.values() for c, _ in files})
        index = {c: i for i, c in enumerate(classes)}
        records = []
        for d in self.domains:
            recs = [Record(rel, index[c], domain=d) for c, rel in found[d]]
            if split in ("train", "val"):
                train, val = holdout_split([r.label for r in recs], holdout, seed)
                recs = [recs[i] for i in (train if split == "train" else val)]
            records.extend(recs)
        super().__init__(source, records, classes, return_bytes)


class VLCS(DomainFolders):
    """VLCS (Caltech101, LabelMe, PASCAL VOC 2007, SUN09; classes bird, car, chair, dog, person)."""

    def __init__(self, root: Path | str, domains: Sequence[str] | str | None = None, **kw) -> None:
        super().__init__(root, "VLCS", VLCS_DOMAINS, domains, **kw)
