"""The catalog: every dataset and teacher by name, in one place, without importing torch.

A row says what a name is (task, label in tables, what it needs) and which module builds it, as an import path
string, so config validation, the CLI (`lfi --help`) and the report read it at the lowest floor. A new dataset
or teacher is its module plus one row: `add_dataset(DatasetSpec(...))` / `add_teacher(TeacherSpec(...))`.

    dataset_spec("pacs").domains        # ('art_painting', 'cartoon', 'photo', 'sketch')
    dataset_names("detection")          # ('tinyimagenet', 'coco', 'voc')
    teacher_spec("oracle").module       # 'lfi.extract.oracle' (registers the teacher when imported)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    name: `data.dataset` / `--dataset`. label: how tables name it. tasks: the config tasks it serves.
    builder: 'module:callable' called as `callable(root, split=split, **options)` by `lfi.data.build_dataset`
        (plus `domains=` when the set has domains, `return_masks=` when it has masks); None: not built by
        `build_dataset` (the demo's synthetic set), hence not extractable either.
    domains: its domains (PACS, VLCS), empty when it has none. masks: it has instance masks (COCO).
    oracle_sources: the ground truth the oracle teacher can map ('boxes', 'masks'), empty for labels only.
    subsets: it has the class subsets and shortcut test of `lfi.data.shortcut` (data.classes_subset).
    """

    name: str
    label: str
    tasks: tuple[str, ...]
    builder: str | None
    domains: tuple[str, ...] = ()
    masks: bool = False
    oracle_sources: tuple[str, ...] = ()
    subsets: bool = False


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher of interaction maps (C_VLM).

    name: `teacher.name` / `--teacher`. label: how tables and captions name it (whether it is the paper's
    LLaVA-1.5 is always said). module: imported to register its factory with `lfi.extract.register_teacher`;
    None for 'none' (no maps). device: its factory takes `device=`. ground_truth: it maps each image's ground
    truth (`teacher.source`), so detection can compute its maps on the fly without a store. figures: `lfi show`
    may run it on a few images (cheap on a CPU).
    """

    name: str
    label: str
    module: str | None
    device: bool = True
    ground_truth: bool = False
    figures: bool = False


_DATASETS: dict[str, DatasetSpec] = {}
_TEACHERS: dict[str, TeacherSpec] = {}


def add_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make dataset `spec.name` known to the config, `build_dataset`, the CLI and the report."""
    _DATASETS[spec.name] = spec
    return spec


def add_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Make teacher `spec.name` known to the config, `build_teacher`, the CLI and the report."""
    _TEACHERS[spec.name] = spec
    return spec


def remove(name: str) -> None:
    """Forget dataset or teacher `name` (tests that add a toy row)."""
    _DATASETS.pop(name, None)
    _TEACHERS.pop(name, None)


def dataset_names(task: str | None = None, *, buildable: bool = False) -> tuple[str, ...]:
    """Datasets serving `task` (None: any), in catalog order; buildable: only those `build_dataset` builds."""
    return tuple(s.name for s in _DATASETS.values()
                 if (task is None or task in s.tasks) and (s.builder is not None or not buildable))  # fmt: skip


def teacher_names(*, buildable: bool = False) -> tuple[str, ...]:
    """Teachers in catalog order; buildable: only those with a module (not 'none')."""
    return tuple(s.name for s in _TEACHERS.values() if s.module is not None or not buildable)


def dataset_spec(name: str) -> DatasetSpec:
    """The row of dataset `name`; ValueError naming the known ones."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_DATASETS)}")
    return _DATASETS[name]


def teacher_spec(name: str) -> TeacherSpec:
    """The row of teacher `name`; ValueError naming the known ones."""
    if name not in _TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(_TEACHERS)}")
    return _TEACHERS[name]


def load(path: str) -> Any:
    """The object at 'package.module:attribute' (imported now, not when the catalog is read)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
VLCS_DOMAINS = ("CALTECH", "LABELME", "PASCAL", "SUN")

for _spec in (
    DatasetSpec("tinyimagenet", "TinyImageNet", ("classification", "detection"), "lfi.data.tinyimagenet:TinyImageNet",
                oracle_sources=("boxes",), subsets=True),
    DatasetSpec("pacs", "PACS", ("classification",), "lfi.data.pacs:PACS", domains=PACS_DOMAINS),
    DatasetSpec("vlcs", "VLCS", ("classification",), "lfi.data.domainbed:VLCS", domains=VLCS_DOMAINS),
    DatasetSpec("imagefolder", "class folders", ("classification",), "lfi.data.imagefolder:ImageFolder",
                oracle_sources=("boxes",)),  # when the folder has a boxes.txt (`lfi.data.imagefolder`)
    DatasetSpec("synthetic", "synthetic (lfi demo)", ("classification",), None),
    DatasetSpec("coco", "COCO 2017", ("detection", "segmentation"), "lfi.data.coco:CocoDetection", masks=True,
                oracle_sources=("boxes", "masks")),
    DatasetSpec("voc", "Pascal VOC", ("detection",), "lfi.data.voc:VOCDetection", oracle_sources=("boxes",)),
):  # fmt: skip
    add_dataset(_spec)

for _teacher in (
    TeacherSpec("llava", "LLaVA-1.5 (the paper's VLM teacher)", "lfi.extract.vlm"),
    TeacherSpec("hf", "a Hugging Face VLM (its family and checkpoint are in the store's metadata)", "lfi.extract.vlm"),
    TeacherSpec("vit", "DeiT-Tiny ViT, VFM->VFM substitute (not the paper's LLaVA-1.5)", "lfi.extract.vit_teacher",
                figures=True),
    TeacherSpec("oracle", "ground-truth box/mask oracle (not the paper's LLaVA-1.5)", "lfi.extract.oracle",
                device=False, ground_truth=True, figures=True),
    TeacherSpec("none", "none (no interaction maps)", None, device=False, figures=True),
):  # fmt: skip
    add_teacher(_teacher)
