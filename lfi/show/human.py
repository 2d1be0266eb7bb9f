"""Bar chart of human alignment (paper Fig. 6): each map's score against human attention, mean ± std.

Takes the summary of `lfi.metrics.human.AlignmentTable` ({map name: {metric: (mean, std)}}), so it needs
nothing but numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from lfi.metrics.human import score_ratio
from lfi.show.save import save_figure

METRIC_LABELS = {"cosine": "cosine similarity", "cc": "CC (Pearson)", "nss": "NSS", "auc_judd": "AUC-Judd"}


def human_alignment_figure(
    summary: Mapping[str, Mapping[str, tuple[float, float]]],
    metrics: Sequence[str] = ("cosine", "cc", "nss"),
    title: str | None = "Comparison with human attention",
    path: str | Path | None = None,
) -> Figure:
    """One panel per metric, one bar per map (in `summary` order) with its std as an error bar and its mean
    written at its foot; the C_AGT / C_VFM cosine ratio goes into the title when both exist and it is defined
    (C_VFM's mean cosine > 0).
    summary: {map name: {metric: (mean, std)}}. Writes PNG and PDF when `path` is given."""
    names = list(summary)
    if not names:
        raise ValueError("human_alignment_figure: empty summary")
    for name in names:
        absent = [m for m in metrics if m not in summary[name]]
        if absent:
            raise KeyError(
                f"human_alignment_figure: map {name!r} has no {absent} (has {sorted(summary[name])})"
            )
    fig = Figure(figsize=(1.0 + 0.9 * len(names) * len(metrics), 3.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colours = [f"C{i}" for i in range(len(names))]
    for ax, metric in zip(axes, metrics, strict=True):
        means = [summary[n][metric][0] for n in names]
        stds = [summary[n][metric][1] for n in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=colours)
        # Values at the foot of the bars (error bars start at the top), on a light box so they read on any
        # bar colour and on bars too short to hold them.
        for x, m in enumerate(means):
            ax.annotate(
                f"{m:.3f}",
                (x, 0.0),
                xytext=(0, 3 if m >= 0 else -3),
                textcoords="offset points",
                ha="center",
                va="bottom" if m >= 0 else "top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.tick_params(axis="x", labelrotation=30 if len(names) > 4 else 0)
    if {"C_AGT", "C_VFM"} <= set(names) and "cosine" in metrics:
        ratio = score_ratio(summary["C_AGT"]["cosine"][0], summary["C_VFM"]["cosine"][0])
        if not math.isnan(ratio):
            title = f"{title or ''}   (C_AGT / C_VFM cosine: {ratio:.2f}x)".strip()
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def human_rows_figure(
    rows: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]],
    references: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    metrics: Sequence[str] = ("cosine", "cc", "nss", "auc_judd"),
    title: str | None = "Comparison with human attention",
    path: str | Path | None = None,
) -> Figure:
    """Several rows (e.g. trained students, each over seeds) side by side: one panel per metric, one group of
    bars per row, one bar per map (C_VFM, C_AGT, C_F: the same colour in every group) with its std, and each
    reference map (teacher, centre bias) as a horizontal line across the panel.
    rows: {row: {map: {metric: (mean, std)}}}; references: {map: {metric: (mean, std)}}."""
    if not rows:
        raise ValueError("human_rows_figure: no rows")
    maps = list(dict.fromkeys(m for per_row in rows.values() for m in per_row))
    width = 0.8 / len(maps)
    fig = Figure(figsize=(len(metrics) * (1.2 + 0.45 * len(rows)), 4.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for k, name in enumerate(maps):
            xs = [i for i, per_row in enumerate(rows.values()) if name in per_row]
            stats = [per_row[name][metric] for per_row in rows.values() if name in per_row]
            ax.bar([x + (k - (len(maps) - 1) / 2) * width for x in xs], [s[0] for s in stats], width,
                   yerr=[s[1] for s in stats], capsize=2, color=f"C{k}", label=name)  # fmt: skip
        for j, (name, per_metric) in enumerate((references or {}).items()):
            ax.axhline(
                per_metric[metric][0], color=f"C{len(maps) + j}", linestyle="--", linewidth=1, label=name
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)), list(rows), rotation=45, ha="right")
        ax.set_title(METRIC_LABELS.get(metric, metric))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=len(labels))
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
