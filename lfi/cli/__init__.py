"""`lfi` command line: one sub-command module per stage of the data flow (extract, train, evaluate, show).

All argparse lives in this package. Each stage module's `register(subparsers)` needs nothing but argparse,
and its commands import the library (torch, timm, lightning, transformers) only when they run, so that
`lfi --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

#: Stage modules, in the order of the data flow; each adds its sub-commands through `register(subparsers)`.
STAGES = ("extract", "train", "sweep", "evaluate", "show", "human", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfi", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (or LFI_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        importlib.import_module(f"lfi.cli.{stage}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, OSError, KeyError, TypeError) as error:
        if args.debug or os.environ.get("LFI_DEBUG") == "1":
            raise
        # one line that names the file or field and the fix; the traceback with --debug
        message = str(error) if not isinstance(error, KeyError) else str(error.args[0])
        print(f"lfi {args.command}: error: {one_line(message)} (--debug for the traceback)", file=sys.stderr)
        return 2


def one_line(message: str) -> str:
    """The error itself, without the worker's traceback that a DataLoader puts into the message of an error
    raised in a worker process ('Caught X in DataLoader worker process 0. Original Traceback ...')."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    return re.sub(
        r"^[\w.]+: ", "", last, count=1
    )  # 'lfi.data.base.ImageDecodeError: file: why' -> 'file: why'


if __name__ == "__main__":
    sys.exit(main())
