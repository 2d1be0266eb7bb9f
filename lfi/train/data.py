"""The datasets of an experiment and the LightningDataModule that serves them, for every task.

Training batches carry the teacher's map (read from the interaction store, moved with every augmentation by
`lfi.data.WithInteractionMaps`) when the student is aligned; validation and test batches never do.

Exact resume: the training order depends only on (seed, epoch) and each sample's augmentation only on
(seed, epoch, index), whatever the worker that draws it (`SeededSamples`); the data module records how many
batches of the current epoch were consumed, so a run resumed from a mid-epoch checkpoint continues at the
next batch and ends bit for bit like an uninterrupted one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lfi.catalog import dataset_spec, teacher_spec
from lfi.config import Config, DataConfig
from lfi.data.base import ImageDecodeError, Samples
from lfi.data.cache import DEFAULT_FOLDER as DEFAULT_CACHE
from lfi.data.cache import ImageCache
from lfi.data.collate import collate_classification, collate_detection
from lfi.data.gpu import DeviceBatches, DeviceImages
from lfi.data.interaction import WithInteractionMaps, read_stored_map
from lfi.data.keys import key_relpath
from lfi.data.pipelines import classification_transforms, detection_transforms
from lfi.data.subsets import holdout_split, ratio_subset

Transform = Callable[[dict], dict]


@dataclass
class ExperimentData:
    """train / val datasets (samples as in `lfi.data.base`), named test sets (e.g. one per unseen domain),
    class names, and: their ImageNet wnids where they have them (KD baseline); for detection, the COCO ground
    truth of val (`coco_gt`) and each label's COCO category id (`category_ids`, None = the label)."""

    train: Dataset
    val: Dataset
    tests: dict[str, Dataset]
    classes: list[str]
    wnids: list[str] | None = None
    coco_gt: Any = None
    category_ids: list[int] | None = None
    notes: dict[str, str] = field(default_factory=dict)


def build_data(cfg: Config) -> ExperimentData:
    """The datasets named by cfg.data (real data under cfg.data.root, or your own by path), for cfg.task."""
    from lfi.data.build import build_dataset, check_path_keys, coco_sets, imagefolder_sets

    d, root = cfg.data, Path(cfg.data.root)
    check_path_keys(d)  # data.train_dir / test_dirs / train_json ... only where the dataset reads them
    if cfg.task != "classification":
        if d.train_json is not None or d.val_json is not None:  # any COCO-format set, by path
            from lfi.data.detection import fraction_subset

            masks = wants_masks(cfg)
            train, val = coco_sets(d, masks)
            train = fraction_subset(train, d.ratio, d.split_seed)
            return ExperimentData(
                train, val, {"val": val}, list(val.classes), coco_gt=val.coco, category_ids=val.coco_ids
            )
        return _detection_data(cfg)
    if dataset_spec(d.dataset).builder is None:  # e.g. the synthetic set, built by `lfi demo`
        raise ValueError(f"data.dataset={d.dataset} has no loader here: it is built by the code that uses it")
    opts = {"domains": train_domains(d)} if dataset_spec(d.dataset).domains else {}
    if d.dataset == "vlcs":
        opts["seed"] = d.split_seed
    if d.dataset == "imagefolder":  # your own class folders, by path (val None: data.val_fraction holds out)
        train, val, tests = imagefolder_sets(d)
    else:
        train = build_dataset(d.dataset, root, "train", **opts)
        val = build_dataset(d.dataset, root, "val", **opts)
        tests = {dom: build_dataset(d.dataset, root, "test", domains=[dom]) for dom in d.test_domains or []}
    if (
        d.shortcut is not None or d.classes_subset is not None
    ):  # the shortcut test (issue 18): id / ood / clean
        if not dataset_spec(d.dataset).subsets:
            raise ValueError(
                f"data.shortcut / data.classes_subset need a dataset with subsets, got {d.dataset!r}"
            )
        from lfi.data.shortcut import shortcut_splits

        train, val, tests = shortcut_splits(
            train, val, d.classes_subset, d.shortcut, d.shortcut_width, d.split_seed
        )
    data = ExperimentData(train, val, tests or {"val": val}, train.classes, getattr(train, "wnids", None))
    if d.val_fraction > 0:  # choose on a split of train; the dataset's own val is then reported as a test
        kept, held_out = holdout_split(train.labels, d.val_fraction, d.split_seed)
        data.train, data.val = Subset(train, kept), Subset(train, held_out)
        data.notes["val"] = (
            f"{len(held_out)} training images held out ({d.val_fraction:g}, seed {d.split_seed})"
        )
    if d.ratio < 1.0:
        labels = (
            [train.labels[i] for i in data.train.indices] if isinstance(data.train, Subset) else train.labels
        )
        kept = ratio_subset(labels, d.ratio, d.split_seed)
        data.train = Subset(data.train, kept)
    if val is None and not tests:  # no test set of its own: the held-out training images are reported
        data.tests = {"val": data.val}
    if d.skip_failed:
        skip_failed_images(data, cfg.teacher.store, held_out=d.val_fraction > 0)
    return data


def failed_paths(store: str | Path) -> list[str]:
    """The image paths `lfi extract --on-error skip` listed in `store`'s failed.jsonl."""
    from lfi.store.layout import read_failures

    return [p for p in (str(f.get("path") or "") for f in read_failures(store)) if p]


def _listed(rel: str, paths: list[str]) -> bool:
    return any(p == rel or p.endswith(":" + rel) for p in paths)


def skip_failed_images(data: ExperimentData, store: str, held_out: bool) -> None:
    """data.skip_failed: drop from data.train (and data.val when it is held out of the training images) every
    image listed in `store`'s failed.jsonl; data.notes["skipped"] says how many."""
    from lfi.store.layout import FAILED_FILE

    listed = failed_paths(store)
    dropped = 0
    for split in ("train", "val") if held_out else ("train",):
        dataset = getattr(data, split)
        try:
            paths = relpaths(dataset)
        except ValueError as e:
            raise ValueError(f"data.skip_failed: {e}") from None
        keep = [i for i, rel in enumerate(paths) if not _listed(rel, listed)]
        dropped += len(dataset) - len(keep)
        setattr(data, split, Subset(dataset, keep))
    data.notes["skipped"] = (
        f"data.skip_failed: {dropped} images listed in {Path(store) / FAILED_FILE} left out"
    )
    warnings.warn(data.notes["skipped"], stacklevel=2)


def check_store_covers(store: Any, dataset: Dataset, where: str | Path) -> None:
    """Raise before training when `store` (an `InteractionStore` at `where`) holds no map for some training
    images, matched by path: what an interrupted `lfi extract` leaves behind, found at set-up instead of at the
    first missing sample, minutes into an epoch. Images its failed.jsonl lists are not counted (decoding them
    fails with its own message, or data.skip_failed leaves them out); a changed file (same path, new bytes)
    is still found when its map is read. Datasets that do not list their files are checked only then."""
    try:
        wanted = relpaths(dataset)
    except ValueError:
        return
    keys: list[str] = store.keys()  # an InteractionStore lists its keys but is not iterable
    stored = {key_relpath(key) for key in keys}
    failed = failed_paths(where)
    missing = [rel for rel in wanted if rel not in stored and not _listed(rel, failed)]
    if missing:
        raise ValueError(
            f"teacher.store {where} holds no map for {len(missing)} of the {len(wanted)} training images "
            f"(e.g. {', '.join(missing[:3])}): was its extraction interrupted, or made from other data files? "
            "Run the same `lfi extract ... --out` again: it resumes and extracts only the missing images"
        )


def relpaths(dataset: Dataset) -> list[str]:
    """The dataset-relative path of every sample, read from the records under any Subsets (no image read)."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    records = getattr(dataset, "records", None)
    if records is None:
        raise ValueError(f"{type(dataset).__name__} does not list its image files")
    return [records[i].relpath for i in (indices if indices is not None else range(len(records)))]


def wants_masks(cfg: Config) -> bool:
    """Instance masks in each sample: segmentation, or a ground-truth teacher reading masks on the fly."""
    return cfg.task == "segmentation" or (
        teacher_spec(cfg.teacher.name).ground_truth and cfg.teacher.source == "masks"
    )


def train_domains(d: DataConfig) -> list[str] | None:
    """PACS / VLCS training domains: data.train_domains; when null and data.test_domains is set, every domain
    but the test domains (leave-one-domain-out); None (all domains) when neither is set."""
    if d.train_domains is not None or not d.test_domains:
        return d.train_domains
    rest = [x for x in dataset_spec(d.dataset).domains if x not in d.test_domains]
    if not rest:
        raise ValueError(
            f"data.test_domains {d.test_domains} leaves no {d.dataset} domain to train on; set data.train_domains"
        )
    return rest


def _detection_data(cfg: Config) -> ExperimentData:
    from lfi.data.build import build_dataset
    from lfi.data.detection import coco_ground_truth, fraction_subset
    from lfi.metrics.coco import coco_from_dataset

    d, root = cfg.data, Path(cfg.data.root)
    masks = wants_masks(cfg)
    opts = {"year": d.year} if d.dataset == "voc" else {}
    train = build_dataset(d.dataset, root, d.train_split, masks=masks, **opts)
    val = build_dataset(d.dataset, root, d.val_split, masks=masks, **opts)
    if hasattr(val, "coco_ids"):  # COCO itself: its own ground truth and category ids
        gt, category_ids = val.coco, val.coco_ids
    else:
        gt, category_ids = coco_from_dataset(coco_ground_truth(val, val.classes)), None
    train = fraction_subset(train, d.ratio, d.split_seed)
    return ExperimentData(train, val, {"val": val}, list(val.classes), coco_gt=gt, category_ids=category_ids)


def stored_maps_of(store: object, keys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The store's maps of `keys` as one tensor (N, th, tw) and their valid flags (N,)."""
    maps, valid = zip(*(read_stored_map(store, key) for key in keys), strict=True)
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(
            f"the interaction store holds maps of several grids {sorted(shapes)}; the GPU data path needs one"
        )
    return torch.stack(maps), torch.tensor(valid)


class SeededSamples(Samples):
    """Indexed by (epoch, index): the sample `index` of `dataset`, transformed with the random state seeded
    by (seed, epoch, index), so that its augmentation does not depend on the worker, the worker count or a
    resume. The global random state of the process is left as it was."""

    def __init__(self, dataset: Dataset, transform: Transform | None, seed: int) -> None:
        super().__init__(dataset, transform)
        self.seed = seed

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, index = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            try:
                return super().__getitem__(index)
            except ImageDecodeError as error:  # one line naming the file, and the way round it
                raise ImageDecodeError(
                    f"{error}; `lfi extract --on-error skip` lists such files in the store's failed.jsonl and "
                    "data.skip_failed=true leaves them out of training",
                    error.path,
                ) from None


class ResumableSampler(Sampler):
    """The training order of one rank: a permutation seeded by (seed, epoch), padded to a multiple of the
    world size and split by rank (as DistributedSampler), whole batches only, yielding (epoch, index) for
    `SeededSamples`.

    `resume(epoch, batches)` skips the first `batches` batches of that epoch once, after a mid-epoch resume.
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.batch_size, self.rank, self.world = size, seed, batch_size, rank, world
        self.epoch, self.skip = 0, 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a resume's skip holds until its epoch ends (set_epoch may repeat it)
            self.skip = 0
        self.epoch = epoch
        if self._resume is not None and self._resume[0] <= epoch:
            if self._resume[0] == epoch:
                self.skip = self._resume[1] * self.batch_size
            self._resume = None

    def resume(self, epoch: int, batches: int) -> None:
        """Skip the first `batches` batches when epoch `epoch` starts (Lightning calls set_epoch then)."""
        self._resume = (epoch, batches)

    def index_tensor(self) -> torch.Tensor:
        """The indices this epoch yields (after a resume's skip), without the epoch, as one int64 tensor: the
        GPU data path's order, made without a Python object per sample."""
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        )
        per_rank = -(-self.size // self.world)
        padded = torch.cat([order, order[: per_rank * self.world - self.size]])
        return padded[self.rank :: self.world][: len(self)][self.skip :]

    def __len__(self) -> int:
        """This rank's samples per epoch, whole batches only (the last partial one is dropped); the whole
        epoch also when resumed: Lightning counts the skipped batches as done."""
        per_rank = -(-self.size // self.world)
        return per_rank if per_rank <= self.batch_size else per_rank - per_rank % self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.index_tensor().tolist()])


class ShardSampler(Sampler):
    """Evaluation order: every index once, in order, split by rank (no padding, so no sample counts twice)."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, size, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class LfiDataModule(L.LightningDataModule):
    """Loaders over `data` for cfg.task; training samples get their map from `store` when one is given.

    grid: the student's patch grid (gh, gw) for classification (detection maps stay on the teacher's grid
    until the loss knows the encoder's). Transforms default to the task's recipe: classification at cfg.data.img_size
    (random resized crop + flip when cfg.data.augment; eval: resize + centre crop), detection DETR's
    multi-scale resize and flip.
    """

    def __init__(
        self,
        cfg: Config,
        data: ExperimentData,
        grid: tuple[int, int] | None = None,
        store: object | None = None,
        train_transforms: Transform | None = None,
        eval_transforms: Transform | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.data, self.grid, self.store = cfg, data, grid, store
        d = cfg.data
        if cfg.task != "classification":
            self.train_tf = train_transforms or detection_transforms(
                d.augment, scales=d.scales, max_size=d.max_size
            )
            self.eval_tf = eval_transforms or detection_transforms(
                False, scales=d.scales, max_size=d.max_size
            )
            self.collate = collate_detection
        else:
            self.train_tf = train_transforms or classification_transforms(d.augment, d.img_size)
            self.eval_tf = eval_transforms or classification_transforms(False, d.img_size)
            self.collate = collate_classification
        self.sampler: ResumableSampler | None = None
        self.custom_transforms = train_transforms is not None or eval_transforms is not None

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer if self._has_trainer() else None
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        d = self.cfg.data
        return DataLoader(
            dataset,
            batch_size=d.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=self.collate,
            persistent_workers=d.num_workers > 0,
            # its own generator: creating an iterator must not draw from the global random state (resume)
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _train_samples(self) -> Dataset:
        """Training samples indexed by (epoch, index), transformed, with their maps when a store is read."""
        train = self.data.train
        if self.cfg.task != "classification":
            from lfi.data.detection import WithOriginalSize

            train = WithOriginalSize(train)
        if self.store is None:
            return SeededSamples(train, self.train_tf, self.cfg.seed)
        # detection: the teacher's own map and its window; the loss puts it on the encoder's grid
        grid = self.grid if self.cfg.task == "classification" else None
        return SeededSamples(WithInteractionMaps(train, self.store, self.train_tf, grid), None, self.cfg.seed)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        rank, world = self._rank_world()
        batch = self.cfg.data.batch_size
        self.sampler = ResumableSampler(len(self.data.train), self.cfg.seed, batch, rank, world)
        # The sampler must stand where the run (re)starts before the loader makes its iterator: after a
        # resume Lightning makes it before it calls set_epoch, and workers draw their indices at once.
        epoch = self.trainer.current_epoch if self._has_trainer() else 0
        if self._pending_resume is not None:
            epoch, batches = self._pending_resume
            if batches >= -(-len(self.sampler) // batch):  # taken at the end of an epoch: the next one
                epoch, batches = epoch + 1, 0
            self.sampler.resume(epoch, batches)
            self._pending_resume = None
        self.sampler.set_epoch(epoch)
        if self.on_device():
            data = self._device_images(self.data.train, with_maps=self.store is not None)
            d = self.cfg.data
            return DeviceBatches(
                data, self.sampler, batch, d.img_size, True, self.cfg.seed, self.grid, augment=d.augment
            )
        return self._loader(self._train_samples(), self.sampler)

    def on_device(self) -> bool:
        """Whether batches are made on the run's device (`lfi.data.gpu`): data.gpu_pipeline, by default on a
        GPU only (true forces it on the CPU too, where it is slower than the loader workers: for tests)."""
        flag = self.cfg.data.gpu_pipeline
        if flag is None:
            on_gpu = self._has_trainer() and self.trainer.strategy.root_device.type == "cuda"
            return on_gpu and self.cfg.task == "classification" and not self.custom_transforms
        return flag

    def image_cache(self, dataset: Dataset, verify: str = "stat") -> ImageCache:
        """`dataset` decoded once (`lfi.data.cache`): at its own size when its images are square, else at
        data.img_size. verify: 'stat' (cheap, every run) or 'full' (also re-hash the cache, `lfi prepare`)."""
        d = self.cfg.data
        first = dataset[0]["image"]
        side = int(first.shape[-1]) if first.shape[-1] == first.shape[-2] else d.img_size
        folder = Path(d.cache_dir).expanduser() if d.cache_dir else DEFAULT_CACHE
        bar = self.cfg.trainer.enable_progress_bar
        return ImageCache.build(dataset, side, folder, workers=d.num_workers, progress=bar, verify=verify)

    def prepare_caches(self, verify: str = "full") -> dict[str, ImageCache]:
        """Every split's image cache (what `lfi prepare` builds ahead of a GPU run, or checks in full)."""
        splits = {
            "train": self.data.train,
            "val": self.data.val,
            **{f"test/{k}": v for k, v in self.data.tests.items()},
        }
        return {name: self.image_cache(dataset, verify) for name, dataset in splits.items()}

    def _device_images(self, dataset: Dataset, with_maps: bool) -> DeviceImages:
        """`dataset`'s image cache moved to the run's device, with the teacher's maps when `with_maps`."""
        cache = self.image_cache(dataset)
        maps = valid = None
        if with_maps:
            maps, valid = stored_maps_of(self.store, cache.keys)
        device = self.trainer.strategy.root_device if self._has_trainer() else torch.device("cpu")
        return DeviceImages.of(cache.images, cache.labels, maps, valid, device)

    _pending_resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        """After loading a checkpoint taken `batches` batches into `epoch`: start there."""
        self._pending_resume = (epoch, batches)

    def _eval_dataset(self, dataset: Dataset) -> Dataset:
        if self.cfg.task != "classification":
            from lfi.data.detection import WithOriginalSize

            return WithOriginalSize(dataset, self.eval_tf)
        return Samples(dataset, self.eval_tf)

    def _eval_loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader | DeviceBatches:
        if self.on_device():
            data = self._device_images(dataset, with_maps=False)
            return DeviceBatches(data, sampler, self.cfg.data.batch_size, self.cfg.data.img_size, False)
        return self._loader(self._eval_dataset(dataset), sampler)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        rank, world = self._rank_world()
        return self._eval_loader(self.data.val, ShardSampler(len(self.data.val), rank, world))

    def test_loaders(self) -> dict[str, DataLoader | DeviceBatches]:
        """One loader per named test set, on this process alone (cfg.data.test_limit caps each set)."""
        limit = self.cfg.data.test_limit
        out = {}
        for name, dataset in self.data.tests.items():
            size = len(dataset) if limit is None else min(limit, len(dataset))
            out[name] = self._eval_loader(dataset, ShardSampler(size))
        return out
