"""`lfi train`: the train stage's commands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from lfi.train.cli import register as register_train
    from lfi.train.detection import register as register_detection

    register_train(subparsers)
    register_detection(subparsers)
