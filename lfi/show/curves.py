"""Convergence (paper Fig. 3-4): a validation metric per epoch of several runs, and how many epochs each needs
to reach a given value; `lfi curves` (`lfi.cli.show`) draws them.

Reads each run folder's metrics.csv through `lfi.train.runs.load_run`: one row per epoch, epochs counted from
0, columns such as ``val/acc1`` (top-1 in %) or ``val/mAP`` (COCO AP in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lfi.show.save import save_figure
from lfi.train.runs import Run, load_run

#: The validation metric a run's checkpoint is chosen by, per task (metrics.json records it as 'monitor').
MONITORS = {"classification": "val/acc1", "detection": "val/mAP", "segmentation": "val/mAP"}


@dataclass(frozen=True)
class Curve:
    """One run's metric per epoch: epochs (0-based, increasing) and values, with a legend label."""

    label: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]


def run_label(run: Run) -> str:
    """A run's name in legends: its experiment name, or its folder's name when the folder was moved or copied
    (then the experiment name no longer tells the copies apart)."""
    experiment = Path(run.cfg.experiment).parts
    return run.cfg.experiment if run.path.resolve().parts[-len(experiment) :] == experiment else run.path.name


def monitor(run: Run) -> str:
    """The metrics.csv column of the run's validation metric: the one recorded in metrics.json, else the task's."""
    return run.metrics.get("monitor") or MONITORS[run.cfg.task]


def run_curve(run: Run, column: str | None = None, label: str | None = None) -> Curve:
    """A `Curve` of a run's metrics.csv column (default: its validation metric), labelled by `run_label`."""
    column = column or monitor(run)
    if not run.epochs:
        raise FileNotFoundError(
            f"{run.files.metrics_csv}: missing or empty; the run has not finished an epoch yet"
        )
    points = run.curve(column)
    if not points:
        present = sorted({k for row in run.epochs for k in row})
        raise KeyError(f"{run.files.metrics_csv}: no values in column {column!r} (columns: {present})")
    epochs, values = zip(*sorted(points), strict=True)
    return Curve(label or run_label(run), epochs, values)


def read_curves(run_dirs: Sequence[str | Path], column: str | None = None) -> list[Curve]:
    """The curves of several run folders, in order."""
    return [run_curve(load_run(path), column) for path in run_dirs]


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


def reach_lines(curves: Sequence[Curve], threshold: float) -> list[str]:
    """Per curve: epochs to reach `threshold` and the speed-up over the first curve (the baseline), as text."""
    lines = []
    for curve in curves:
        reached = epochs_to_reach(curve, threshold)
        ratio = speedup(curves[0], curve, threshold)
        pace = "n/a (one of them never reaches it)" if math.isnan(ratio) else f"{ratio:.2f}x"
        lines.append(
            f"{curve.label}: {'never' if reached is None else reached} epochs to {threshold:g}, "
            f"{pace} vs {curves[0].label}"
        )
    return lines


def _pace(ratio: float) -> str:
    """Epochs-to-threshold ratio as words: 2.5 -> '2.50x faster', 0.8 -> '1.25x slower'."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


#: Runs of at most this many epochs get a marker on every point.
SHORT_RUN = 10


def _legend_label(curves: Sequence[Curve], i: int, threshold: float | None) -> str:
    """Curve i's label; with a threshold, its epochs to reach it and its pace against the first curve."""
    label = curves[i].label
    if threshold is None:
        return label
    reached = epochs_to_reach(curves[i], threshold)
    label += f" ({'never' if reached is None else f'{reached} ep'} to {threshold:g}"
    ratio = speedup(curves[0], curves[i], threshold)
    return label + (f", {_pace(ratio)})" if i > 0 and not math.isnan(ratio) else ")")


def convergence_figure(
    curves: Sequence[Curve],
    threshold: float | None = None,
    ylabel: str = "validation metric",
    title: str | None = "Convergence",
    path: str | Path | None = None,
) -> Figure:
    """Metric per epoch, one line per run (epochs drawn 1-based, as counts of training epochs); with a
    `threshold`, a dashed line at it and, per run, a star where it is first reached and the epoch count in
    the legend, with the speed-up over the first curve (the baseline). The legend sits below the plot; runs
    of at most SHORT_RUN epochs get a marker per point. Writes PNG and PDF given `path`."""
    if not curves:
        raise ValueError("convergence_figure: no curves")
    labels = [_legend_label(curves, i, threshold) for i in range(len(curves))]
    ncol = 1 if max(map(len, labels)) > 45 else 2
    # the legend goes below the axes (a legend inside squeezes the plot), so the figure grows with its rows
    fig = Figure(figsize=(5.5, 3.2 + 0.2 * math.ceil(len(curves) / ncol)), layout="constrained")
    ax = fig.subplots()
    for i, curve in enumerate(curves):
        epochs = [e + 1 for e in curve.epochs]
        # a marker on every point of a short run: a one-epoch run is a single point, invisible as a line
        marker = "o" if len(epochs) <= SHORT_RUN else None
        ax.plot(epochs, curve.values, color=f"C{i}", marker=marker, markersize=4, label=labels[i])
        reached = epochs_to_reach(curve, threshold) if threshold is not None else None
        if reached is not None:
            ax.plot(reached, curve.values[curve.epochs.index(reached - 1)], "*", color=f"C{i}", markersize=10)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are counts
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, fontsize=8)
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig
