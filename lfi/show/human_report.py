"""The tables and files of `lfi eval-human` (paper Fig. 6): what `lfi.evaluate.human.evaluate_human` scored, as
Markdown (human_alignment.md), CSV, JSON and the bar chart (`lfi.show.human`). Draws and tabulates only: the
maps were made, and the teacher run, in the evaluate stage.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfi.evaluate.human import VLM_CAPTIONS, HumanComparison, HumanEvaluation, HumanReport
from lfi.metrics.human import METRICS, PAPER_RATIO, RATIO_METRICS, AlignmentTable, aggregate, split_layer
from lfi.show.human import human_alignment_figure, human_rows_figure


def report_text(evaluation: HumanEvaluation) -> str:
    """The header and the tables of an evaluation, as human_alignment.md holds them."""
    return f"{evaluation.header}\n\n{markdown(evaluation.report)}"


def markdown(report: HumanReport | HumanComparison) -> str:
    """The tables of one row or of several."""
    return comparison_markdown(report) if isinstance(report, HumanComparison) else report_markdown(report)


def report_markdown(report: HumanReport) -> str:
    """The tables of one row (`HumanReport`): the maps, per layer, and the C_AGT / C_VFM ratios."""
    d = report.to_dict()
    metrics = [m for m in METRICS if m in report.runs[0].metrics]
    over = (
        "images" if report.over == "images" else f"{len(report.runs)} runs (each run's mean over the images)"
    )
    lines = [
        f"Mean ± std over {over}; {d['images']} images, grid {d['resample']}."
        + (" References do not depend on the run: mean ± std over images." if d["references"] else ""),
        "",
        "| map | " + " | ".join(metrics) + " | n |",
        "|---|" + "---|" * len(metrics) + "---|",
    ]
    rows = [(n, s) for n, s in d["maps"].items()] + [
        (f"{n} (reference)", s) for n, s in d["references"].items()
    ]
    for name, stats in rows:
        n = next(iter(stats.values()))["n"]
        lines.append(f"| {name} | " + " | ".join(_cell(stats.get(m)) for m in metrics) + f" | {n} |")
    if d["layers"]:
        lines += ["", "Per layer (each block's class-token map alone, as trained):", ""]
        lines += ["| layer | map | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        for layer, per_map in d["layers"].items():
            for name, stats in per_map.items():
                lines.append(
                    f"| {layer} | {name} | " + " | ".join(_cell(stats.get(m)) for m in metrics) + " |"
                )
    ratios = d["ratio_agt_over_vfm"]
    if ratios:
        rm = [m for m in RATIO_METRICS if m in metrics]
        lines += [
            "",
            f"C_AGT / C_VFM, ratio of mean scores (paper, cosine: {PAPER_RATIO}x); 'mean' = the maps averaged "
            "over the alignment layers"
            + ("; mean ± std of the per-run ratios" if report.over == "runs" else "")
            + ":",
            "",
            "| layer | " + " | ".join(f"{m} ratio" for m in rm) + " |",
            "|---|" + "---|" * len(rm),
        ]
        for layer, per_metric in ratios.items():
            lines.append(f"| {layer} | " + " | ".join(_ratio_cell(per_metric[m]) for m in rm) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: HumanComparison) -> str:
    """The tables of several rows (`HumanComparison`), then each row's own (`report_markdown`)."""
    d = comparison.to_dict()
    metrics = [m for m in METRICS if m in next(iter(comparison.rows.values())).runs[0].metrics]
    lines = [
        f"Rows: mean ± std over each row's runs (each run's mean over the images); references: mean ± std over "
        f"the images. {d['images']} images, grid {d['resample']}.",
        "",
        "| row | map | " + " | ".join(metrics) + " | n |",
        "|---|---|" + "---|" * len(metrics) + "---|",
    ]
    for row in d["rows"]:
        for name, stats in row["maps"].items():
            cells = " | ".join(_cell(stats.get(m)) for m in metrics)
            lines.append(f"| {row['row']} | {name} | {cells} | {_runs_cell(len(row['runs']))} |")
    for name, stats in d["references"].items():
        n = next(iter(stats.values()))["n"]
        lines.append(
            f"| reference | {name} | " + " | ".join(_cell(stats.get(m)) for m in metrics) + f" | {n} |"
        )
    with_ratio = [row for row in d["rows"] if row["ratio_agt_over_vfm"]]
    if with_ratio:
        layers = list(with_ratio[0]["ratio_agt_over_vfm"])
        lines += [
            "",
            f"C_AGT / C_VFM cosine ratio (paper: {PAPER_RATIO}x), mean ± std over the runs of each row; 'mean' = "
            "the maps averaged over the alignment layers, L<k> = block k alone:",
            "",
            "| row | " + " | ".join(layers) + " |",
            "|---|" + "---|" * len(layers),
        ]
        for row in with_ratio:
            ratios = row["ratio_agt_over_vfm"]
            cells = [_ratio_cell(ratios[k]["cosine"]) if k in ratios else "" for k in layers]
            lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    for label, report in comparison.rows.items():
        lines += ["", f"### {label}", "", report_markdown(report)]
    return "\n".join(lines)


def _runs_cell(n: int) -> str:
    return f"{n} runs" if n > 1 else "1 run (std over images)"


def _cell(stat: Mapping[str, Any] | None) -> str:
    if stat is None:
        return "-"  # not scored (AUC-Judd of a per-layer map, see `LAYER_METRICS`)
    if stat["mean"] is None:
        return "undefined"
    return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat["std"] is not None else "")


def _ratio_cell(stat: Mapping[str, Any]) -> str:
    if stat["mean"] is None:
        return "undefined (C_VFM's mean <= 0)"
    undefined = sum(r is None for r in stat["runs"])
    text = f"{stat['mean']:.2f}x" + (f" ± {stat['std']:.2f}" if stat["std"] is not None else "")
    return text + (f" ({undefined} runs undefined)" if undefined else "")


def write_outputs(table: AlignmentTable, out: Path, header: str, teacher: str) -> list[Path]:
    """human_alignment.md (header + table), .csv and the bar chart .png / .pdf in `out` (one table)."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "human_alignment.md"
    md.write_text(f"{header}\n\n{table.to_markdown()}\n")
    csv = table.write_csv(out / "human_alignment.csv")
    title = f"Human alignment, {table.images} OSIE images; {VLM_CAPTIONS[teacher]}"
    human_alignment_figure(table.summary(), title=title, path=out / "human_alignment.png")
    return [md, csv, out / "human_alignment.png", out / "human_alignment.pdf"]


def write_report(evaluation: HumanEvaluation, out: str | Path) -> list[Path]:
    """human_alignment.json, .md (header + tables), .csv and the bar chart .png / .pdf in `out`. One row (a
    `HumanReport`): the csv has every map of its table when there is one run, the aggregated ones otherwise;
    several (a `HumanComparison`): the csv has a ``row`` column and the chart a group of bars per row."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report, title = evaluation.report, evaluation.title
    data = {"header": evaluation.header, **report.to_dict()}
    js = out / "human_alignment.json"
    js.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    md = out / "human_alignment.md"
    md.write_text(report_text(evaluation) + "\n")
    csv_path = out / "human_alignment.csv"
    png = out / "human_alignment.png"
    if isinstance(report, HumanComparison):
        _write_comparison_csv(report, csv_path)
        human_rows_figure(report.figure_rows(), report.figure_references(), title=title, path=png)
    else:
        _write_summary_csv(report, csv_path)
        summary = report.summary()
        human_alignment_figure(summary, metrics=[m for m in METRICS if m in next(iter(summary.values()))],
                               title=title, path=png)  # fmt: skip
    return [js, md, csv_path, png, png.with_suffix(".pdf")]


def _csv_rows(groups: Sequence[Sequence[AlignmentTable]], metrics: Sequence[str]) -> list[list[Any]]:
    """[map, layer, <metric>_mean, <metric>_std ..., n] per map of each group of tables, aggregated."""
    out = []
    for name, stats in (item for tables in groups for item in aggregate(tables).items()):
        base, layer = split_layer(name)
        cells = [_num(stats[m][s]) if m in stats else "" for m in metrics for s in ("mean", "std")]
        out.append([base, "" if layer is None else layer, *cells, next(iter(stats.values()))["n"]])
    return out


def _csv_header(metrics: Sequence[str]) -> list[str]:
    return ["map", "layer", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "n"]


def _write_summary_csv(report: HumanReport, path: Path) -> None:
    metrics = report.runs[0].metrics
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_csv_header(metrics))
        writer.writerows(_csv_rows(report.groups, metrics))


def _write_comparison_csv(comparison: HumanComparison, path: Path) -> None:
    metrics = next(iter(comparison.rows.values())).runs[0].metrics
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", *_csv_header(metrics)])
        for label, report in comparison.rows.items():
            writer.writerows([label, *r] for r in _csv_rows(report.groups, metrics))
        if comparison.references is not None:
            writer.writerows(["reference", *r] for r in _csv_rows([[comparison.references]], metrics))


def _num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"
