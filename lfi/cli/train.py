"""`lfi train CONFIG [KEY=VALUE ...] [--resume [CKPT]]`: train any task from a config (Lightning).

A finished run folder, or one with a checkpoint, is refused without --resume. SIGTERM / SIGINT save a
checkpoint, print the `--resume` command and exit 143 / 130."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any


def cmd_train(args: argparse.Namespace) -> int:
    from lfi.config import load_config
    from lfi.train.engine import train
    from lfi.train.signals import Interrupted
    from lfi.train.sweep import die_with_parent

    die_with_parent()  # a run of `lfi sweep` ends with the sweep, even a killed one
    cfg = load_config(args.config, args.overrides)
    callbacks = []
    if cfg.trainer.log_maps_every_n_epochs and cfg.task == "classification":
        from lfi.show.tensorboard import LogInteractionMaps

        callbacks.append(LogInteractionMaps(every_n_epochs=cfg.trainer.log_maps_every_n_epochs))
    try:
        result = train(cfg, resume=args.resume, callbacks=callbacks)
    except Interrupted as stop:
        print(f"lfi train: {stop}; {resume_hint(args, stop)}", file=sys.stderr)
        return stop.exit_code
    if result.metrics:
        print(json.dumps(result.metrics["test"], indent=2))
        print(f"run folder: {result.run_dir}")
    return 0


def resume_hint(args: argparse.Namespace, stop: Any) -> str:
    """How to go on after `stop` (an `Interrupted`): the exact `lfi train ... --resume` command, or, before
    the first checkpoint, the command itself (the folder holds nothing to resume)."""
    again = ["lfi", "train", args.config, *args.overrides]
    if stop.checkpoint is None:
        return f"no checkpoint was written yet; start again with: {shlex.join(again)}"
    return f"checkpoint {stop.checkpoint}; continue with: {shlex.join([*again, '--resume'])}"


def cmd_prepare(args: argparse.Namespace) -> int:
    from lfi.config import load_config
    from lfi.train.data import LfiDataModule, build_data

    cfg = load_config(args.config, args.overrides)
    if cfg.task != "classification":
        raise ValueError(
            f"lfi prepare: the image cache is for classification; {args.config} is task {cfg.task!r}"
        )
    for name, cache in LfiDataModule(cfg, build_data(cfg)).prepare_caches().items():
        print(f"{name}: {cache.images.shape[0]} images {tuple(cache.images.shape[1:])} in {cache.path}")
    return 0


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The one override syntax of every command: dotted KEY=VALUE pairs after the config or run folder."""
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted overrides, values as YAML: trainer.max_epochs=3 data.test_domains=[sketch]",
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a ViT / I-ViT / DETR / I-DETR or a baseline from a config")
    p.add_argument("config", help="experiment YAML (configs/; `task:` picks classification or detection)")
    add_overrides(p)
    p.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CKPT",
        help="continue from CKPT, or from the run folder's checkpoints/last.ckpt when no path is given",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)
    p = subparsers.add_parser(
        "prepare",
        help="decode a config's images once into the cache of the GPU data path (an existing one is re-hashed)",
    )
    p.add_argument("config", help="experiment YAML")
    add_overrides(p)
    p.set_defaults(func=cmd_prepare)
