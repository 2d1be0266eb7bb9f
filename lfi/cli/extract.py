"""`lfi extract` and `lfi store info|verify|compact`: the extract stage's commands.

lfi extract --teacher vit --data ../shared/data --dataset tinyimagenet --split val --out stores/tin-val-vit
lfi extract --teacher vit --dataset imagefolder --data my_photos/train --out stores/my_vit   # class folders
lfi extract --teacher oracle --dataset coco --data my_coco/annotations.json --out stores/my_oracle   # COCO json
torchrun --nproc-per-node 4 -m lfi.cli extract --teacher llava --device cuda ...   # one writer per rank
lfi extract --teacher hf --teacher-arg model=Qwen/Qwen2-VL-2B-Instruct --device cuda ...   # any VLM family
lfi store info stores/tin-val-vit
lfi store verify stores/tin-val-vit --data ../shared/data --dataset tinyimagenet --split val
lfi store compact stores/tin-val-vit

Only argparse and the standard library are imported here; the commands import the library when they run,
so `lfi --help` and `lfi store info` (which reads no tensor) answer at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lfi.catalog import dataset_names, teacher_names

# Constants rather than imports of the modules they mirror, which import torch (tests/extract checks they agree).
EMPTY_POLICIES = ("skip", "uniform", "error")  # lfi.extract.teacher.EMPTY_POLICIES
ON_ERROR = ("error", "skip")  # lfi.extract.run.ON_ERROR


def teacher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher factory's keywords from --grid, --vit-back, --weights and --teacher-arg KEY=VALUE."""
    kwargs: dict[str, Any] = {}
    grid = None
    if args.grid:
        if len(args.grid) > 2:
            raise ValueError(f"--grid takes H or H W, got {args.grid}")
        grid = (args.grid[0], args.grid[-1])
    if args.teacher in ("oracle", "hf"):
        kwargs.update({"grid": grid} if grid else {})
    elif args.teacher == "vit":
        kwargs.update(back=args.vit_back, grid=grid)
        if args.weights:
            kwargs["weights"] = args.weights
    elif grid:
        raise ValueError(
            f"--grid applies to the oracle, vit and hf teachers; {args.teacher!r} sets its own grid"
        )
    for item in args.teacher_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--teacher-arg expects KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a plain string such as a checkpoint name
    return kwargs


def check_oracle_boxes(args: argparse.Namespace) -> None:
    """The oracle on your own class folders needs their boxes.txt (else it would store only invalid maps)."""
    if args.teacher != "oracle" or args.dataset != "imagefolder":
        return
    from lfi.data.build import build_dataset

    dataset = build_dataset("imagefolder", args.data, args.split)
    if not dataset.has_boxes:
        raise ValueError(
            f"--teacher oracle: {args.data} has no boxes.txt ('<class>/<image> x0 y0 x1 y1' lines), so the oracle "
            "has nothing to map; add one, or use a teacher that reads the image (--teacher vit or llava)"
        )


def cmd_extract(args: argparse.Namespace) -> int:
    from lfi.extract.run import run_extraction

    check_oracle_boxes(args)

    report = run_extraction(
        args.teacher,
        teacher_kwargs(args),
        args.dataset,
        args.data,
        args.split,
        args.out,
        domains=args.domains,
        oracle_source=args.oracle_source,
        device=args.device,
        batch_size=args.batch_size,
        limit=args.limit,
        empty=args.empty,
        on_error=args.on_error,
        num_workers=args.workers,
    )
    if report is not None:  # rank 0 speaks for all ranks
        print(f"{args.out}: {report.summary()}")
    return 0


def cmd_store_info(args: argparse.Namespace) -> int:
    from lfi.store.layout import summarize  # standard library only: no torch

    info = summarize(args.store)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"store {info['root']}: {info['records']} records ({info['valid']} valid, {info['empty']} empty) "
        f"in {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB; writers {info['writers']}"
    )
    if info["duplicates"]:
        print(f"  {info['duplicates']} duplicate records: run `lfi store compact {info['root']}`")
    if info["failed"]:
        print(f"  {info['failed']} images failed at extraction: see {Path(info['root']) / 'failed.jsonl'}")
    for k, v in sorted(info["metadata"].items()):
        print(f"  {k}: {v}")
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    from lfi.store.shards import InteractionStore

    expected, unreadable = None, []
    if args.dataset:
        from lfi.data.build import build_dataset
        from lfi.extract.run import dataset_keys

        if args.data is None:
            raise ValueError("store verify: --dataset needs --data to list the expected images")
        dataset = build_dataset(args.dataset, args.data, args.split, domains=args.domains)
        expected, unreadable = dataset_keys(dataset, args.limit)
    report = InteractionStore(args.store, strict=False).verify(expected)
    report.missing += unreadable
    print(report.summary())
    return 0 if report.ok else 1


def cmd_store_compact(args: argparse.Namespace) -> int:
    from lfi.store.shards import compact

    report = compact(args.store, keep_first=args.keep_first)
    print(report.summary(args.store))
    return 1 if report.differing else 0


def _add_dataset_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--data", type=Path, required=required,
        help="dataset root, zip or extracted folder; imagefolder: a folder or zip of class folders; "
        "coco: also any COCO-format .json (its images beside it)",
    )  # fmt: skip
    p.add_argument("--dataset", choices=dataset_names(buildable=True), required=required)
    p.add_argument(
        "--split", default="train",
        help="dataset split (default: train); imagefolder: picks DATA/<split>/ when DATA holds split folders",
    )  # fmt: skip
    p.add_argument("--domains", nargs="+", help="PACS / VLCS domains (default: all)")
    p.add_argument("--limit", type=int, help="only the first N images")


def _add_extract(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("extract", help="write a teacher's interaction maps for a dataset to a store")
    p.add_argument("--teacher", required=True, choices=teacher_names(buildable=True))
    _add_dataset_args(p, required=True)
    p.add_argument("--out", type=Path, required=True, help="store folder (created, or resumed if it exists)")
    p.add_argument("--grid", type=int, nargs="+", help="map grid: H [W] (default: the teacher's own)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:LOCAL_RANK under torchrun) or cuda:N")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    p.add_argument(
        "--empty",
        choices=EMPTY_POLICIES,
        default="skip",
        help="maps with no positive relu(fore - back): skip = store invalid (default), "
        "uniform = store 1/(h*w), error = stop",
    )
    p.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="error",
        help="an image that cannot be read or mapped: error = stop (default), "
        "skip = list it in STORE/failed.jsonl and go on",
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


def _add_store(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("store", help="inspect, check or repair an interaction store")
    sub = s.add_subparsers(dest="store_command", required=True)
    info = sub.add_parser("info", help="summarise a store (from store.json and the shard headers)")
    info.add_argument("store", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_store_info)
    verify = sub.add_parser(
        "verify", help="find corrupt shards, bad maps, duplicate and (with --dataset) missing records"
    )
    verify.add_argument("store", type=Path)
    _add_dataset_args(verify, required=False)
    verify.set_defaults(func=cmd_store_verify)
    compact = sub.add_parser(
        "compact", help="remove duplicate records and leftover temporary files; restore store.json"
    )
    compact.add_argument("store", type=Path)
    compact.add_argument(
        "--keep-first",
        action="store_true",
        help="also remove duplicates that differ from a key's first record (the one readers use)",
    )
    compact.set_defaults(func=cmd_store_compact)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `extract` and `store` sub-commands (each sets `func(args) -> exit code`)."""
    _add_extract(subparsers)
    _add_store(subparsers)
