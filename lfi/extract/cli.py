"""`lfi extract` and `lfi store info|verify`: command-line front end of extraction and the store.

lfi extract --teacher vit --data ../shared/data --dataset tinyimagenet --split val --out stores/tin-val-vit
torchrun --nproc-per-node 4 -m lfi.cli extract --teacher llava --device cuda ...   # one shard per rank
lfi store info stores/tin-val-vit
lfi store verify stores/tin-val-vit --data ../shared/data --dataset tinyimagenet --split val
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import Dataset

from lfi.extract.run import extract, sample_key
from lfi.extract.store import InteractionStore
from lfi.extract.teacher import DEFAULT_EMPTY, EMPTY_POLICIES, available_teachers, build_teacher

DATASETS = ("tinyimagenet", "pacs", "coco")


class _WithWnid(Dataset):
    """TinyImageNet samples plus their wnid, so ImageNet teachers find the class exactly."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        return {**sample, "wnid": self.dataset.wnids[sample["label"]]}


#: Ground truth each dataset has for the oracle teacher (PACS has labels only).
ORACLE_SOURCES = {"tinyimagenet": ("boxes",), "pacs": (), "coco": ("boxes", "masks")}


def check_oracle_source(dataset: str, source: str) -> None:
    """Refuse an oracle extraction the dataset cannot feed (it would store nothing but invalid maps)."""
    if source not in ORACLE_SOURCES.get(dataset, (source,)):
        have = ", ".join(ORACLE_SOURCES[dataset]) or "no boxes or masks"
        raise ValueError(
            f"--teacher oracle --oracle-source {source}: dataset {dataset!r} has {have}; "
            "use a teacher that reads the image (--teacher vit or llava)"
        )


def open_dataset(name: str, root: Path, split: str, domains: list[str] | None, masks: bool) -> Dataset:
    """A dataset of `lfi.data` whose samples carry 'image', 'key', 'boxes', ('label', 'class_name')."""
    if name == "tinyimagenet":
        from lfi.data.tinyimagenet import TinyImageNet

        return _WithWnid(TinyImageNet(root, split=split))
    if name == "pacs":
        from lfi.data.pacs import PACS

        return PACS(root, domains=domains, split=split)
    if name == "coco":
        from lfi.data.coco import CocoDetection

        return CocoDetection(root, split=split, return_masks=masks)
    raise ValueError(f"--dataset must be one of {DATASETS}, got {name!r}")


def _teacher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    grid = None
    if args.grid:
        if len(args.grid) > 2:
            raise ValueError(f"--grid takes H or H W, got {args.grid}")
        grid = (args.grid[0], args.grid[-1])
    if args.teacher == "oracle":
        kwargs.update(source=args.oracle_source, **({"grid": grid} if grid else {}))
    elif args.teacher == "vit":
        kwargs.update(device=args.device, back=args.vit_back, grid=grid)
        if args.weights:
            kwargs["weights"] = args.weights
    else:  # llava and user-registered teachers: only the device and what --teacher-arg says
        if grid:
            raise ValueError(
                f"--grid applies to the oracle and vit teachers; {args.teacher!r} sets its own grid"
            )
        kwargs["device"] = args.device
    for item in args.teacher_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--teacher-arg expects KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a plain string such as a checkpoint name
    return kwargs


def _device_for_rank(device: str) -> str:
    """torchrun: each rank uses cuda:LOCAL_RANK when asked for plain 'cuda'."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def cmd_extract(args: argparse.Namespace) -> int:
    started_dist = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if args.device.startswith("cuda") else "gloo")
        started_dist = True
    args.device = _device_for_rank(args.device)
    try:
        if args.teacher == "oracle":
            check_oracle_source(args.dataset, args.oracle_source)
        teacher = build_teacher(args.teacher, **_teacher_kwargs(args))
        dataset = open_dataset(
            args.dataset, args.data, args.split, args.domains, args.oracle_source == "masks"
        )
        meta = {"dataset": args.dataset, "split": args.split}
        if args.domains:
            meta["domains"] = sorted(args.domains)
        report = extract(
            teacher,
            dataset,
            args.out,
            batch_size=args.batch_size,
            limit=args.limit,
            empty=args.empty,
            num_workers=args.workers,
            metadata=meta,
        )
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"{args.out}: {report.summary()}")
    finally:
        if started_dist:
            dist.destroy_process_group()
    return 0


def cmd_store_info(args: argparse.Namespace) -> int:
    info = InteractionStore(args.store).info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"store {info['root']}: {info['records']} records ({info['valid']} valid, {info['empty']} empty) "
        f"in {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB; writers {info['writers']}"
    )
    for k, v in sorted(info["metadata"].items()):
        print(f"  {k}: {v}")
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    expected = None
    if args.dataset:
        if args.data is None:
            raise ValueError("store verify: --dataset needs --data to list the expected images")
        dataset = open_dataset(args.dataset, args.data, args.split, args.domains, masks=False)
        n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        expected = [sample_key(dataset[i]) for i in range(n)]
    report = InteractionStore(args.store, strict=False).verify(expected)
    print(report.summary())
    return 0 if report.ok else 1


def _add_dataset_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", type=Path, required=required, help="dataset root, zip or extracted folder")
    p.add_argument("--dataset", choices=DATASETS, required=required)
    p.add_argument("--split", default="train", help="dataset split (default: train)")
    p.add_argument("--domains", nargs="+", help="PACS domains (default: all)")
    p.add_argument("--limit", type=int, help="only the first N images")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `extract` and `store` sub-commands (each sets `func(args) -> exit code`)."""
    p = subparsers.add_parser("extract", help="write a teacher's interaction maps for a dataset to a store")
    p.add_argument("--teacher", required=True, help=f"teacher name: {', '.join(available_teachers())}")
    _add_dataset_args(p, required=True)
    p.add_argument("--out", type=Path, required=True, help="store folder (created, or resumed if it exists)")
    p.add_argument("--grid", type=int, nargs="+", help="map grid: H [W] (default: the teacher's own)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:LOCAL_RANK under torchrun) or cuda:N")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    p.add_argument(
        "--empty",
        choices=EMPTY_POLICIES,
        default=DEFAULT_EMPTY,
        help="maps with no positive relu(fore - back): skip = store invalid (default), "
        "uniform = store 1/(h*w), error = stop",
    )
    p.add_argument(
        "--oracle-source", choices=("boxes", "masks"), default="boxes", help="oracle teacher input"
    )
    p.add_argument(
        "--vit-back", choices=("uniform", "others"), default="uniform", help="vit teacher's C_back"
    )
    p.add_argument("--weights", type=Path, help="vit teacher weights (default: shared DeiT-Tiny)")
    p.add_argument(
        "--teacher-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword for the teacher's factory (VALUE parsed as JSON if it can be)",
    )
    p.set_defaults(func=cmd_extract)

    s = subparsers.add_parser("store", help="inspect an interaction store")
    sub = s.add_subparsers(dest="store_command", required=True)
    info = sub.add_parser("info", help="summarise a store")
    info.add_argument("store", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_store_info)
    verify = sub.add_parser("verify", help="find corrupt, duplicate or (with --dataset) missing records")
    verify.add_argument("store", type=Path)
    _add_dataset_args(verify, required=False)
    verify.set_defaults(func=cmd_store_verify)
