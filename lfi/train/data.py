"""Datasets of an experiment and the LightningDataModule that serves them with their interaction maps.

Training batches carry the teacher's map (read from the interaction store, moved with every augmentation by
`lfi.data.WithInteractionMaps`) when the student is aligned; validation and test batches never do (the
teacher is not available at test time, and accuracy does not need it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from lfi.data.collate import collate_classification
from lfi.data.interaction import WithInteractionMaps
from lfi.data.pipelines import classification_transforms
from lfi.data.subsets import ratio_subset
from lfi.train.config import Config

Transform = Callable[[dict], dict]


@dataclass
class ExperimentData:
    """train / val datasets (samples as in `lfi.data.base`), named test sets (e.g. one per unseen domain),
    class names and, where the classes are ImageNet classes, their wnids (for the KD baseline)."""

    train: Dataset
    val: Dataset
    tests: dict[str, Dataset]
    classes: list[str]
    wnids: list[str] | None = None
    notes: dict[str, str] = field(default_factory=dict)


def build_data(cfg: Config) -> ExperimentData:
    """The datasets named by cfg.data (real data under cfg.data.root)."""
    d = cfg.data
    root = Path(d.root)
    if d.dataset == "tinyimagenet":
        from lfi.data.tinyimagenet import TinyImageNet

        train, val = TinyImageNet(root, "train"), TinyImageNet(root, "val")
        data = ExperimentData(train, val, {"val": val}, train.classes, train.wnids)
    elif d.dataset == "pacs":
        from lfi.data.pacs import PACS

        train, val = PACS(root, d.train_domains, "train"), PACS(root, d.train_domains, "val")
        tests = {dom: PACS(root, [dom], "test") for dom in d.test_domains or []}
        data = ExperimentData(train, val, tests or {"val": val}, train.classes)
    elif d.dataset == "vlcs":
        from lfi.data.domainbed import VLCS

        kw = {"holdout": 0.2, "seed": d.split_seed}
        train, val = (
            VLCS(root, d.train_domains, split="train", **kw),
            VLCS(root, d.train_domains, split="val", **kw),
        )
        tests = {dom: VLCS(root, [dom], split="all") for dom in d.test_domains or []}
        data = ExperimentData(train, val, tests or {"val": val}, train.classes)
    else:
        raise ValueError(
            f"data.dataset={d.dataset!r} has no loader here (the synthetic set is built by lfi demo)"
        )
    if d.ratio < 1.0:
        data.train = Subset(data.train, ratio_subset(data.train.labels, d.ratio, d.split_seed))
    return data


class LfiDataModule(L.LightningDataModule):
    """Loaders over `data`; training samples get their map from `store` when `store` is given.

    grid: the student's patch grid (gh, gw); transforms default to the ViT recipe at cfg.data.img_size
    (train: random resized crop + flip if cfg.data.augment, eval: resize + centre crop).
    """

    def __init__(
        self,
        cfg: Config,
        data: ExperimentData,
        grid: tuple[int, int],
        store: object | None = None,
        train_transforms: Transform | None = None,
        eval_transforms: Transform | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.data, self.grid, self.store = cfg, data, grid, store
        size = cfg.data.img_size
        self.train_tf = train_transforms or classification_transforms(cfg.data.augment, size)
        self.eval_tf = eval_transforms or classification_transforms(False, size)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        d = self.cfg.data
        return DataLoader(
            dataset,
            batch_size=d.batch_size,
            sampler=EpochRandomSampler(dataset, self.cfg.seed) if shuffle else None,
            num_workers=d.num_workers,
            collate_fn=collate_classification,
            persistent_workers=d.num_workers > 0,
            drop_last=shuffle and len(dataset) > d.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        if self.store is not None:
            ds: Dataset = WithInteractionMaps(self.data.train, self.store, self.train_tf, self.grid)
        else:
            ds = _Transformed(self.data.train, self.train_tf)
        return self._loader(ds, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(_Transformed(self.data.val, self.eval_tf), shuffle=False)

    def test_loaders(self) -> dict[str, DataLoader]:
        """One loader per named test set (plain, for `lfi.evaluate`)."""
        return {
            name: self._loader(_Transformed(ds, self.eval_tf), shuffle=False)
            for name, ds in self.data.tests.items()
        }


class EpochRandomSampler(RandomSampler):
    """A random order that depends only on (seed, epoch): a run resumed from a checkpoint sees the same order
    as an uninterrupted one. Lightning calls `set_epoch` every epoch; under DDP it replaces this sampler (a
    RandomSampler) with a DistributedSampler seeded the same way."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        super().__init__(dataset)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=g).tolist())


class _Transformed(Dataset):
    """A sample dataset with a transform applied to each sample dict (raw bytes dropped)."""

    def __init__(self, dataset: Dataset, transform: Transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample.pop("data", None)
        return self.transform(sample)
