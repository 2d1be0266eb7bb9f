"""`lfi extract`, `lfi store ...`: the extract stage's commands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from lfi.extract.cli import register as register_extract  # moved here by the extract-stage rework

    register_extract(subparsers)
