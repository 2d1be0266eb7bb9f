"""The extraction loop: a teacher and a dataset of samples -> an interaction store, resumably.

Each process (torchrun rank r of W) takes samples r, r + W, r + 2W, ... of the first `limit`, skips the
keys already committed to the store, runs the teacher on the rest in batches, applies Eq. 11/12 and the
empty policy (`lfi.extract.teacher.apply_contrast`) and writes records through its own `StoreWriter`.
Killing it loses at most the records not yet committed; running it again continues with those. Keys are
re-read from the store before every batch and again at every commit (under the store's lock), so a second
process on the same store (a job launched twice) skips what the first has done and never duplicates it.
`run_extraction` is the library side of `lfi extract` (teacher and dataset by name, torchrun set-up).
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
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lfi.catalog import dataset_spec, teacher_spec
from lfi.data.keys import image_key
from lfi.extract.teacher import DEFAULT_EMPTY, EmptyPolicy, Sample, Teacher, apply_contrast, image_hw
from lfi.store.layout import FAILED_FILE, append_failure
from lfi.store.shards import Record, StoreWriter

#: What to do with an image that cannot be read or whose map cannot be made: stop (default) or list it in
#: the store's failed.jsonl and go on.
ON_ERROR = ("error", "skip")


@dataclass
class ExtractReport:
    """Counts of one extraction run (summed over ranks when torch.distributed is initialised)."""

    assigned: int  # samples this run was responsible for
    skipped: int  # already in the store, or a key repeated in the dataset (done once)
    written: int
    empty: int  # relu(fore - back) was all zero: the empty policy was applied
    invalid: int  # stored as invalid (all-zero) maps
    failed: int  # could not be read or mapped (--on-error skip): listed in the store's failed.jsonl
    seconds: float
    empty_policy: str
    store: str = ""

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        failed = f"; {self.failed} FAILED, listed in {Path(self.store) / FAILED_FILE}" if self.failed else ""
        return (
            f"{self.assigned} images: {self.written} written, {self.skipped} already stored or repeated; "
            f"{self.empty} with an all-zero relu(fore - back) (empty policy {self.empty_policy!r}), "
            f"{self.invalid} stored invalid{failed}; {self.seconds:.1f} s, {rate:.1f} written img/s"
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


@dataclass
class _Failure:
    """A sample the dataset could not produce: the error travels as a value, so that one bad file neither
    kills a DataLoader worker nor loses the name of the file."""

    error: Exception
    path: str


class _Guarded(Dataset):
    """`dataset[indices[i]]` as (dataset index, sample or `_Failure`)."""

    def __init__(self, dataset: Dataset | Sequence[Sample], indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Sample | _Failure]:
        index = self.indices[i]
        try:
            return index, self.dataset[index]
        except Exception as e:  # any reader error: the loop decides (stop or list) with --on-error
            return index, _Failure(e, getattr(e, "path", ""))


def _list_collate(batch: list[Any]) -> list[Any]:
    return batch


def _all_reduce(counts: list[int]) -> list[int]:
    if not (dist.is_available() and dist.is_initialized()):
        return counts
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _records(teacher: Teacher, samples: list[Sample], keys: list[str], empty: EmptyPolicy) -> list[Record]:
    """The teacher's maps of a batch after Eq. 11/12 and the empty policy, as store records."""
    result = teacher(samples)
    if result.fore.shape[0] != len(samples):
        raise ValueError(f"teacher {teacher.name!r} returned {result.fore.shape[0]} maps for {len(samples)}")
    c = apply_contrast(result.fore, result.back, empty, keys)
    return [
        Record(key, c.maps[i], image_hw(sample["image"]), bool(c.valid[i]), bool(c.empty[i]), result.info[i])
        for i, (sample, key) in enumerate(zip(samples, keys, strict=True))
    ]


@dataclass
class _Run:
    """One extraction process: where its failures go and what it counted, for its report."""

    out: Path | str
    writer: str
    on_error: str
    skipped: int = 0
    empty: int = 0
    invalid: int = 0
    failed: int = 0

    def fail(self, index: int, key: str | None, path: str, error: Exception) -> None:
        """List a sample that cannot be read or mapped in the store's failed.jsonl (on_error="skip")."""
        self.failed += 1
        entry = {"index": index, "key": key, "path": path, "error": f"{type(error).__name__}: {error}"}
        append_failure(self.out, {**entry, "writer": self.writer})

    def pick(
        self, batch: Sequence[tuple[int, Any]], committed: set[str], seen: set[str]
    ) -> tuple[list[Sample], list[str], list[int]]:
        """The samples of a loader batch to map now, with their keys and dataset indices: read, and neither
        committed to the store nor met before in this run (`seen` is updated)."""
        todo, keys, where = [], [], []
        for index, sample in batch:
            if isinstance(sample, _Failure):
                if self.on_error == "error":
                    raise ValueError(
                        f"{sample.error} (dataset index {index}); `lfi extract --on-error skip` lists such "
                        f"images in {Path(self.out) / FAILED_FILE} and goes on"
                    ) from sample.error
                self.fail(index, None, sample.path, sample.error)
                continue
            key = sample_key(sample)
            if key in committed or key in seen:
                self.skipped += 1
                continue
            seen.add(key)
            todo.append(sample)
            keys.append(key)
            where.append(index)
        return todo, keys, where

    def records(
        self, teacher: Teacher, todo: list[Sample], keys: list[str], where: list[int], empty: EmptyPolicy
    ) -> list[Record]:
        """The teacher's records of `todo` in one batch; with on_error="skip", a batch that fails is mapped
        again one image at a time, to find and list the culprit(s)."""
        if not todo:
            return []
        if self.on_error == "error":
            return _records(teacher, todo, keys, empty)
        try:
            return _records(teacher, todo, keys, empty)
        except Exception:
            records: list[Record] = []
            for sample, key, index in zip(todo, keys, where, strict=True):
                try:
                    records += _records(teacher, [sample], [key], empty)
                except Exception as e:
                    self.fail(index, key, sample.get("relpath", ""), e)
            return records


def extract(
    teacher: Teacher,
    dataset: Dataset | Sequence[Sample],
    out: Path | str,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    empty: EmptyPolicy = DEFAULT_EMPTY,
    on_error: str = "error",
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
    on_error: "error" stops at the first sample that cannot be read or mapped; "skip" appends it (dataset
    index, key if known, path, error) to ``<out>/failed.jsonl`` and goes on. A run that finds keys committed
    meanwhile by another process on the same store skips them, so two runs at once never store a key twice.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(rank, n, world_size))
    start = time.monotonic()
    run = _Run(out, f"r{rank:03d}", on_error)
    with StoreWriter(
        out, store_metadata(teacher, empty, metadata), writer=run.writer, shard_size=shard_size
    ) as w:
        seen: set[str] = set()  # keys of this run, committed or still buffered
        loader = DataLoader(
            _Guarded(dataset, indices),
            batch_size=batch_size,
            collate_fn=_list_collate,
            num_workers=num_workers,
        )
        bar = tqdm(
            total=len(indices), unit="img", desc=f"extract r{rank}", position=rank, disable=not progress
        )
        for batch in loader:
            # re-read the committed keys: another process on this store may have committed more
            todo, keys, where = run.pick(batch, w.done_keys(), seen)
            for record in run.records(teacher, todo, keys, where, empty):
                w.add(record)
                run.empty += record.empty
                run.invalid += not record.valid
            bar.update(len(batch))
            bar.set_postfix(written=w.committed, skipped=run.skipped, failed=run.failed, refresh=False)
        bar.close()
    # records another process committed between our check and our flush were dropped by the writer
    counts = [len(indices), run.skipped + w.dropped, w.committed, run.empty, run.invalid, run.failed]
    return ExtractReport(
        *_all_reduce(counts), seconds=time.monotonic() - start, empty_policy=empty, store=str(out)
    )


def check_oracle_source(dataset: str, source: str) -> None:
    """Refuse an oracle extraction the dataset cannot feed (it would store nothing but invalid maps)."""
    sources = dataset_spec(dataset).oracle_sources  # the ground truth it has (PACS and VLCS: labels only)
    if source not in sources:
        have = ", ".join(sources) or "no boxes or masks"
        raise ValueError(
            f"--teacher oracle --oracle-source {source}: dataset {dataset!r} has {have}; "
            "use a teacher that reads the image (--teacher vit or llava)"
        )


def device_for_rank(device: str) -> str:
    """torchrun: each rank uses cuda:LOCAL_RANK when asked for plain 'cuda'."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def run_extraction(
    teacher: str,
    teacher_kwargs: Mapping[str, Any],
    dataset: str,
    data: Path | str,
    split: str,
    out: Path | str,
    *,
    domains: Sequence[str] | None = None,
    oracle_source: str = "boxes",
    device: str = "cpu",
    **extract_kwargs: Any,
) -> ExtractReport | None:
    """`lfi extract`: build teacher `teacher` and dataset `dataset` (`lfi.data.build_dataset`), then `extract`.

    Under torchrun (WORLD_SIZE > 1) it joins the process group (NCCL for CUDA devices, else Gloo) and each
    rank uses cuda:LOCAL_RANK for device 'cuda'. teacher_kwargs go to the teacher's factory, after device
    (for teachers whose catalog row takes one) and the oracle source (for those mapping the ground truth).
    extract_kwargs go to `extract` (batch_size, limit, empty, on_error, num_workers, ...). Returns the report
    on rank 0 and None on other ranks.
    """
    from lfi.data.build import build_dataset
    from lfi.extract.teacher import build_teacher

    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        started = True
    try:
        spec, kwargs = teacher_spec(teacher), {}
        if spec.ground_truth:
            check_oracle_source(dataset, oracle_source)
            kwargs["source"] = oracle_source
        if spec.device:
            kwargs["device"] = device_for_rank(device)
        built = build_teacher(teacher, **{**kwargs, **teacher_kwargs})
        samples = build_dataset(dataset, data, split, domains=domains, masks=oracle_source == "masks")
        meta: dict[str, Any] = {"dataset": dataset, "split": split}
        if domains:
            meta["domains"] = sorted(domains)
        report = extract(built, samples, out, metadata=meta, **extract_kwargs)
        return report if rank_and_world()[0] == 0 else None
    finally:
        if started:
            dist.destroy_process_group()


def dataset_keys(
    dataset: Dataset | Sequence[Sample], limit: int | None = None
) -> tuple[list[str], list[str]]:
    """(store keys of the first `limit` samples, descriptions of the samples that could not be read)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    keys, unreadable = [], []
    guarded = _Guarded(dataset, range(n))
    for i in range(n):
        index, sample = guarded[i]
        if isinstance(sample, _Failure):
            unreadable.append(f"dataset index {index}: cannot be read ({sample.error})")
        else:
            keys.append(sample_key(sample))
    return keys, unreadable
