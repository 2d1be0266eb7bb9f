"""`lfi eval`, `lfi eval-human`: the evaluate stage's commands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from lfi.evaluate.cli import register as register_eval
    from lfi.evaluate.human_cli import register as register_human

    register_eval(subparsers)
    register_human(subparsers)
