"""`lfi` command line: one sub-command per stage of the data flow (extract, train, eval, show)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add sub-commands through `register(subparsers)`, in the order of the data flow.
COMMAND_MODULES = (
    "lfi.extract.cli",  # extract, store
    "lfi.models.cli",  # params
    "lfi.train.cli",  # train
    "lfi.train.detection",  # train-det, eval-det
    "lfi.evaluate.cli",  # eval
    "lfi.evaluate.human_cli",  # eval-human
    "lfi.show.viz",  # viz
    "lfi.show.curves",  # curves
    "lfi.show.report",  # report
    "lfi.demo.cli",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfi", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
