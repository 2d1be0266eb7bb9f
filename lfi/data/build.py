"""`build_dataset`: every dataset of `lfi.data` by name, the one dispatcher used by extraction and training;
`imagefolder_sets` and `coco_sets` (your own data): the datasets a config's data section names by path.

Each dataset module is imported when its catalog row is built (`lfi.catalog`), so naming one dataset never
loads another's dependencies (pycocotools for COCO, for instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lfi.catalog import dataset_names, dataset_spec, load
from lfi.config import ConfigError, DataConfig


def build_dataset(
    name: str,
    root: Path | str,
    split: str,
    *,
    domains: Sequence[str] | None = None,
    masks: bool = False,
    **options: Any,
) -> Dataset:
    """Dataset `name` (a buildable row of `lfi.catalog`) of `split`, read from `root` (a zip, its folder, or the
    extracted dataset; each dataset's class documents what it accepts).

    domains: PACS / VLCS only, None = all; the splits keep each dataset's own meaning (PACS: official kfold
    lists 'train', 'crossval' = 'val', 'test' = the whole domain; VLCS: 'all', or a seeded holdout 'train' /
    'val'). masks: COCO only, instance masks in each sample. options: further keywords of the dataset's class
    (e.g. holdout and seed for VLCS, year for VOC, crowd for COCO, classes for imagefolder).

    imagefolder: root is a folder or zip of class folders (`lfi.data.imagefolder`); split picks its sub-folder
    when root holds train/ val/ test/. coco: root may also be any COCO-format .json file (images= its images).
    """
    buildable = dataset_names(buildable=True)
    if name not in buildable:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(buildable)}")
    spec = dataset_spec(name)
    if domains is not None and not spec.domains:
        with_domains = [n for n in buildable if dataset_spec(n).domains]
        raise ValueError(f"dataset {name!r} has no domains (only {', '.join(with_domains)} do)")
    if masks and not spec.masks:
        with_masks = [n for n in buildable if dataset_spec(n).masks]
        raise ValueError(f"dataset {name!r} has no instance masks (only {', '.join(with_masks)} has)")
    if spec.domains:
        options["domains"] = domains
    if spec.masks:
        options["return_masks"] = masks
    return load(spec.builder)(root, split=split, **options)


#: Config keys of your own data, and the data.dataset each belongs to.
PATH_KEYS = {"train_dir": ("imagefolder", "coco"), "val_dir": ("imagefolder", "coco"),
             "test_dirs": ("imagefolder",), "train_json": ("coco",), "val_json": ("coco",)}  # fmt: skip


def check_path_keys(d: DataConfig) -> None:
    """data.train_dir / val_dir / test_dirs / train_json / val_json only with the datasets that read them."""
    for key, datasets in PATH_KEYS.items():
        if getattr(d, key) is not None and d.dataset not in datasets:
            raise ConfigError(
                f"'data.{key}' is read by data.dataset={' or '.join(datasets)}, not {d.dataset!r}; "
                f"remove it or set data.dataset"
            )
    if (
        d.dataset == "coco"
        and (d.train_dir, d.val_dir) != (None, None)
        and (d.train_json, d.val_json) == (None, None)
    ):
        raise ConfigError(
            "'data.train_dir' / 'data.val_dir' with data.dataset=coco are the images of 'data.train_json' / "
            "'data.val_json' (COCO-format annotation files): set those"
        )


def _exists(key: str, path: object) -> Path:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"'{key}' must be a path (a folder or a .zip), got {path!r}")
    if not Path(path).exists():
        raise ConfigError(f"'{key}': {path} does not exist (expected a folder or a .zip)")
    return Path(path)


def _open(key: str, path: object, split: str, **options: Any) -> Dataset:
    """ImageFolder at `path`; any error becomes a ConfigError naming `key`."""
    from lfi.data.imagefolder import ImageFolder

    folder = _exists(key, path)
    try:
        return ImageFolder(folder, split, **options)
    except (ValueError, OSError) as e:
        raise ConfigError(f"'{key}': {e}") from None


def imagefolder_sets(d: DataConfig) -> tuple[Dataset, Dataset | None, dict[str, Dataset]]:
    """(train, val, {name: test}) of data.dataset=imagefolder: data.train_dir, data.val_dir (None when only
    data.val_fraction holds images out), data.test_dirs; val and tests read the training classes."""
    check_path_keys(d)
    if d.train_dir is None:
        raise ConfigError(
            "'data.train_dir' is required for data.dataset=imagefolder: a folder or zip with one sub-folder of "
            "images per class"
        )
    if d.val_dir is None and d.val_fraction == 0:
        raise ConfigError(
            "data.dataset=imagefolder needs 'data.val_dir' (a folder of the same classes) or "
            "'data.val_fraction' > 0 (a stratified share of data.train_dir held out for validation)"
        )
    if d.train_domains is not None or d.test_domains is not None:
        raise ConfigError(
            "'data.train_domains' / 'data.test_domains' name PACS / VLCS domains; with data.dataset=imagefolder "
            "name test sets in 'data.test_dirs' {name: folder}"
        )
    tests = d.test_dirs or {}
    if not isinstance(tests, dict) or not all(isinstance(k, str) for k in tests):
        raise ConfigError(
            f"'data.test_dirs' must map test-set names to folders, e.g. {{sketch: data/sketch}}, got {tests!r}"
        )
    train = _open("data.train_dir", d.train_dir, "train")
    val = _open("data.val_dir", d.val_dir, "val", classes=train.classes) if d.val_dir is not None else None
    return train, val, {name: _open(f"data.test_dirs.{name}", path, "test", classes=train.classes)
                        for name, path in tests.items()}  # fmt: skip


def coco_sets(d: DataConfig, masks: bool = False) -> tuple[Dataset, Dataset]:
    """(train, val) of data.dataset=coco given by path: data.train_json / data.val_json, COCO-format json files
    (they may be the same file), their images in data.train_dir / data.val_dir (default: found beside them)."""
    from lfi.data.coco import CocoDetection

    check_path_keys(d)
    sets = []
    for split in ("train", "val"):
        key, images = f"data.{split}_json", getattr(d, f"{split}_dir")
        ann = getattr(d, f"{split}_json")
        if ann is None:
            raise ConfigError(
                f"'{key}' is required with data.train_json / data.val_json: the COCO json of the {split} images "
                "(it may be the other split's file)"
            )
        _exists(key, ann)
        if images is not None:
            _exists(f"data.{split}_dir", images)
        try:
            sets.append(CocoDetection(ann, return_masks=masks, images=images))
        except (ValueError, OSError) as e:
            raise ConfigError(f"'{key}': {e}") from None
    train, val = sets
    cats = [set(zip(ds.coco_ids, ds.classes, strict=True)) for ds in (train, val)]
    if cats[0] != cats[1]:
        raise ConfigError(
            f"'data.val_json' and 'data.train_json' list different categories (id, name): only in train "
            f"{sorted(cats[0] - cats[1])[:5]}, only in val {sorted(cats[1] - cats[0])[:5]}; the detector's labels "
            "need the same categories in both"
        )
    return train, val
