"""`lfi sweep CONFIG [CONFIG ...] [KEY=VALUE ...] --set key=v1,v2 [--set other=a,b] --seeds 0,1,2 [--jobs N]
[--devices 0,1] [--dry-run]`: train a config over a grid of values and seeds, then tabulate the runs."""

from __future__ import annotations

import argparse
import sys


def split_positionals(items: list[str]) -> tuple[list[str], list[str]]:
    """CONFIG files first (no '='), then KEY=VALUE overrides."""
    configs = []
    for i, item in enumerate(items):
        if "=" in item:
            rest = items[i:]
            bad = [x for x in rest if "=" not in x]
            if bad:
                raise ValueError(
                    f"lfi sweep: config files go before the KEY=VALUE overrides, got {bad} after them"
                )
            return configs, rest
        configs.append(item)
    return configs, []


def cmd_sweep(args: argparse.Namespace) -> int:
    from lfi.train.sweep import describe, parse_seeds, parse_sets, plan

    configs, overrides = split_positionals(args.items)
    if not configs:
        raise ValueError("lfi sweep: no config file given")
    seeds = parse_seeds(args.seeds) if args.seeds else []
    runs = plan(configs, parse_sets(args.set or []), seeds, overrides)
    if args.dry_run:
        print(describe(runs))
        return 0
    from lfi.show.sweep import sweep

    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    result = sweep(runs, jobs=args.jobs, devices=devices)
    counts = {k: sum(s.status == k for s in result.statuses) for k in ("ok", "failed", "skipped")}
    print(
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; summary: {result.summary}"
    )
    if result.report is not None:
        print(f"table: {result.report}")
    for s in result.statuses:
        if s.status == "failed":
            print(f"failed (exit {s.returncode}): {s.run_dir} (log: {s.run_dir}/train.log)", file=sys.stderr)
    return 1 if counts["failed"] else 0


def cmd_study(args: argparse.Namespace) -> int:
    from lfi.train.study import read_study, run_study, study_root

    study = read_study(args.study)
    only = [r.strip() for r in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or []) - set(study.rows))
    if unknown:
        raise ValueError(f"lfi study: --only {unknown} are not rows of {args.study} ({sorted(study.rows)})")
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    result = run_study(study, args.overrides, args.jobs, devices, only, train=not args.report_only)
    from lfi.show.study import write_study_report

    root = study_root(study, args.overrides)
    print(f"study: {root / 'study.json'}; tables: {write_study_report(result, root)}")
    for run_dir in result["failed"]:
        print(f"failed: {run_dir} (log: {run_dir}/train.log)", file=sys.stderr)
    return 1 if result["failed"] else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train configs over a grid of values and seeds (several runs at a time, resumable), then tabulate",
        description=__doc__,
    )
    p.add_argument(
        "items", nargs="+", metavar="CONFIG|KEY=VALUE",
        help="experiment YAML(s), e.g. a table's ViT and I-ViT rows, then dotted overrides for every run",
    )  # fmt: skip
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=V1,V2",
        help="a swept key and its values, as YAML; commas inside brackets do not split: "
        "data.test_domains=[art_painting],[cartoon]. Several --set: their cartesian product",
    )
    p.add_argument("--seeds", metavar="S1,S2", help="seeds, e.g. 0,1,2 or 0-4 (default: the config's seed)")
    p.add_argument(
        "--jobs", type=int, default=1,
        help="runs trained at a time, each in its own process (several small runs share a GPU); default 1",
    )  # fmt: skip
    p.add_argument(
        "--devices", metavar="0,1",
        help="GPU ids dealt to the --jobs slots in turn (CUDA_VISIBLE_DEVICES of each run); default: all, shared",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the runs and their commands, train nothing")
    p.set_defaults(func=cmd_sweep)
    p = subparsers.add_parser(
        "study",
        help="tune each row of a comparison on the validation split (same grid size per row), then run it over seeds",
    )
    p.add_argument("study", help="study YAML (configs/study/*/study.yaml): rows, their tuning grids, seeds")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides for every run")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs trained at a time (several small runs share a GPU)"
    )
    p.add_argument("--devices", metavar="0,1", help="GPU ids dealt to the --jobs slots in turn")
    p.add_argument(
        "--only",
        metavar="ROW1,ROW2",
        help="run these rows only (a `like` row's own row is tuned too, if not yet)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="train nothing: tables of the runs finished so far"
    )
    p.set_defaults(func=cmd_study)
