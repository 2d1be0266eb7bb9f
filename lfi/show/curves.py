"""Convergence (paper Fig. 3-4): validation accuracy per epoch of several runs, and how many epochs each needs
to reach a given accuracy.

Reads Lightning `CSVLogger` files (``<run>/.../metrics.csv``): one row per logging call, columns ``epoch``,
``step`` and every logged metric, cells empty where a row did not log that metric. Epochs there count from 0.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from lfi.show.save import save_figure

DEFAULT_COLUMN = "val/acc1"


@dataclass(frozen=True)
class Curve:
    """One run's metric per epoch: epochs (0-based, increasing) and values, with a legend label."""

    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]


def read_curve(
    path: str | Path, column: str = DEFAULT_COLUMN, label: str | None = None, epoch_column: str = "epoch"
) -> Curve:
    """A `Curve` from a Lightning ``metrics.csv``: per epoch, the last non-empty value of `column` in it.

    label defaults to the name of the run folder holding the csv (the folder above ``version_*``, if any).
    """
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for needed in (column, epoch_column):
            if needed not in header:
                raise KeyError(f"{path}: no column {needed!r} (columns: {header})")
        per_epoch: dict[int, float] = {}
        for line, row in enumerate(reader, start=2):
            if row[column] in ("", None) or row[epoch_column] in ("", None):
                continue
            try:
                per_epoch[int(float(row[epoch_column]))] = float(row[column])
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {epoch_column!r} / {column!r} not numbers") from err
    if not per_epoch:
        raise ValueError(f"{path}: column {column!r} has no values")
    if label is None:
        run = path.parent
        label = run.parent.name if run.name.startswith("version_") else run.name
    epochs = sorted(per_epoch)
    return Curve(label, tuple(epochs), tuple(per_epoch[e] for e in epochs))


def epochs_to_reach(curve: Curve, threshold: float) -> int | None:
    """Training epochs after which `curve` first reaches `threshold` (its 0-based epoch + 1), or None."""
    for epoch, value in zip(curve.epochs, curve.values, strict=True):
        if value >= threshold:
            return epoch + 1
    return None


def speedup(baseline: Curve, other: Curve, threshold: float) -> float:
    """How many times fewer epochs `other` needs than `baseline` to reach `threshold` (paper Fig. 3: ~7x for
    I-ViT over ViT). NaN if either never reaches it."""
    b, o = epochs_to_reach(baseline, threshold), epochs_to_reach(other, threshold)
    return b / o if b is not None and o is not None else math.nan


def _pace(ratio: float) -> str:
    """Epochs-to-threshold ratio as words: 2.5 -> '2.50x faster', 0.8 -> '1.25x slower'."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def convergence_figure(
    curves: Sequence[Curve],
    threshold: float | None = None,
    ylabel: str = "validation top-1 accuracy",
    title: str | None = "Convergence",
    path: str | Path | None = None,
) -> Figure:
    """Metric per epoch, one line per run (epochs drawn 1-based, as counts of training epochs); with a
    `threshold`, a dashed line at it and, per run, a marker where it is first reached and the epoch count in
    the legend, with the speed-up over the first curve (the baseline). Writes PNG and PDF given `path`."""
    if not curves:
        raise ValueError("convergence_figure: no curves")
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, curve in enumerate(curves):
        epochs = [e + 1 for e in curve.epochs]
        label = curve.label
        if threshold is not None:
            reached = epochs_to_reach(curve, threshold)
            label += f" ({'never' if reached is None else f'{reached} ep'} to {threshold:g}"
            ratio = speedup(curves[0], curve, threshold)
            label += f", {_pace(ratio)})" if i > 0 and not math.isnan(ratio) else ")"
            if reached is not None:
                ax.plot(reached, curve.values[curve.epochs.index(reached - 1)], "o", color=f"C{i}")
        ax.plot(epochs, curve.values, color=f"C{i}", label=label)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def register(subparsers: argparse._SubParsersAction) -> None:
    """``lfi curves CSV... --out FIG``: the convergence figure of several runs' ``metrics.csv`` files."""
    p = subparsers.add_parser("curves", help="convergence plot (Fig. 3-4) from Lightning metrics.csv files")
    p.add_argument("csv", nargs="+", type=Path, help="metrics.csv per run; the first is the baseline")
    p.add_argument("--column", default=DEFAULT_COLUMN, help=f"metric column (default {DEFAULT_COLUMN})")
    p.add_argument("--threshold", type=float, help="accuracy whose epochs-to-reach are reported")
    p.add_argument("--out", type=Path, required=True, help="figure path; .png and .pdf are written")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    curves = [read_curve(path, args.column) for path in args.csv]
    convergence_figure(curves, threshold=args.threshold, path=args.out)
    if args.threshold is not None:
        for curve in curves:
            reached = epochs_to_reach(curve, args.threshold)
            print(
                f"{curve.label}: {'never' if reached is None else reached} epochs to {args.threshold:g}, "
                f"{speedup(curves[0], curve, args.threshold):.2f}x vs {curves[0].label}"
            )
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.pdf')}")
