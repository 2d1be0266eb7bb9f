"""The extraction loop: a teacher and a dataset of samples -> an interaction store, resumably.

Each process (torchrun rank r of W) takes samples r, r + W, r + 2W, ... of the first `limit`, skips the
keys already committed to the store, runs the teacher on the rest in batches, applies Eq. 11/12 and the
empty policy (`lfi.extract.teacher.apply_contrast`) and writes records through its own `StoreWriter`.
Killing it loses at most the records not yet committed; running it again continues with those.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from lfi.extract.store import Record, StoreWriter, image_key
from lfi.extract.teacher import DEFAULT_EMPTY, EmptyPolicy, Sample, Teacher, apply_contrast, image_hw


@dataclass
class ExtractReport:
    """Counts of one extraction run (summed over ranks when torch.distributed is initialised)."""

    assigned: int  # samples this run was responsible for
    skipped: int  # already in the store, or a key repeated in the dataset (done once)
    written: int
    empty: int  # relu(fore - back) was all zero: the empty policy was applied
    invalid: int  # stored as invalid (all-zero) maps
    seconds: float
    empty_policy: str

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.assigned} images: {self.written} written, {self.skipped} already stored or repeated; "
            f"{self.empty} with an all-zero relu(fore - back) (empty policy {self.empty_policy!r}), "
            f"{self.invalid} stored invalid; {self.seconds:.1f} s, {rate:.1f} written img/s"
        )


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): from torch.distributed when initialised, else torchrun's RANK / WORLD_SIZE."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def sample_key(sample: Sample) -> str:
    """The sample's store key: its 'key', else image_key(relpath, data)."""
    if "key" in sample:
        return sample["key"]
    if "relpath" in sample and "data" in sample:
        return image_key(sample["relpath"], sample["data"])
    raise KeyError(f"sample needs 'key' or both 'relpath' and 'data' to be stored; it has {sorted(sample)}")


def store_metadata(teacher: Teacher, empty: EmptyPolicy, extra: Mapping[str, Any] | None = None) -> dict:
    """Store-level metadata of a run: the teacher's, the empty policy and caller's extra fields (dataset...)."""
    meta = {**teacher.metadata(), "empty_policy": empty, **(extra or {})}
    if list(meta.get("grid", [])) != list(teacher.grid):
        raise ValueError(
            f"teacher {teacher.name!r}: metadata grid {meta.get('grid')} != teacher.grid {teacher.grid}"
        )
    return meta


def _list_collate(batch: list[Sample]) -> list[Sample]:
    return batch


def _all_reduce(counts: list[int]) -> list[int]:
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def extract(
    teacher: Teacher,
    dataset: Dataset | Sequence[Sample],
    out: Path | str,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    empty: EmptyPolicy = DEFAULT_EMPTY,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 0,
    shard_size: int = 512,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Write the teacher's map of every sample of `dataset` (map-style, samples as `Sample`) to store `out`.

    rank / world_size: default from torch.distributed or torchrun's env. metadata: extra store-level fields
    (e.g. dataset and split) that must match on resume. num_workers: DataLoader workers decoding images.
    """
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(rank, n, world_size))
    start = time.monotonic()
    skipped = written = n_empty = invalid = 0
    with StoreWriter(
        out, store_metadata(teacher, empty, metadata), writer=f"r{rank:03d}", shard_size=shard_size
    ) as w:
        done = w.done_keys()
        loader = DataLoader(
            Subset(dataset, indices), batch_size=batch_size, collate_fn=_list_collate, num_workers=num_workers
        )
        bar = tqdm(
            total=len(indices), unit="img", desc=f"extract r{rank}", position=rank, disable=not progress
        )
        for batch in loader:
            todo, keys = [], []
            for sample in batch:
                key = sample_key(sample)
                if key in done:
                    skipped += 1
                else:
                    done.add(key)
                    todo.append(sample)
                    keys.append(key)
            if todo:
                result = teacher(todo)
                if result.fore.shape[0] != len(todo):
                    raise ValueError(
                        f"teacher {teacher.name!r} returned {result.fore.shape[0]} maps for {len(todo)}"
                    )
                c = apply_contrast(result.fore, result.back, empty, keys)
                for i, (sample, key) in enumerate(zip(todo, keys, strict=True)):
                    w.add(
                        Record(
                            key,
                            c.maps[i],
                            image_hw(sample["image"]),
                            bool(c.valid[i]),
                            bool(c.empty[i]),
                            result.info[i],
                        )
                    )
                written += len(todo)
                n_empty += int(c.empty.sum())
                invalid += int((~c.valid).sum())
            bar.update(len(batch))
            bar.set_postfix(written=written, skipped=skipped, empty=n_empty, refresh=False)
        bar.close()
    counts = _all_reduce([len(indices), skipped, written, n_empty, invalid])
    return ExtractReport(*counts, seconds=time.monotonic() - start, empty_policy=empty)
