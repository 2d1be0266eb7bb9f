"""A study's tables (`lfi study`): each row's tuning grid with its validation scores, and its seeds' results.

<study root>/study.md   1. results: per row, the chosen point, the held-out val score and every test set's
                           top-1 as mean ± sample std over the seeds (n), and the spread rule's verdict
                           against a reference row
                        2. tuning: every grid point of every row with its val score (the choice in bold)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfi.files import atomic_write
from lfi.show.curves import Curve, epochs_to_reach, run_curve
from lfi.show.report import mean_std
from lfi.train.runs import finished, load_run


def _point(point: Mapping[str, Any] | None) -> str:
    if not point:
        return "config as is"
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())


def row_results(run_dirs: Sequence[str], metric: str = "acc1") -> dict[str, Any]:
    """Per test set the values of `metric` over the row's finished runs, and their last-epoch val/acc1."""
    tests: dict[str, list[float]] = {}
    val: list[float] = []
    curves: list[Curve] = []
    teacher, control, epochs = set(), set(), set()
    for d in run_dirs:
        if not finished(d):
            continue
        run = load_run(d)
        for name, m in run.metrics["test"].items():
            if isinstance(m, dict) and metric in m:
                tests.setdefault(name, []).append(float(m[metric]))
        if run.curve("val/acc1"):
            curves.append(run_curve(run, "val/acc1"))
            val.append(curves[-1].values[-1])
        teacher.add(run.cfg.teacher.name)
        control.add(run.cfg.teacher.control)
        epochs.add(run.metrics.get("epochs"))
    return {"tests": tests, "val": val, "curves": curves, "teacher": "/".join(sorted(teacher)), "control": "/".join(sorted(control)),
            "epochs": "/".join(str(e) for e in sorted(epochs, key=str))}  # fmt: skip


def epochs_to(curves: Sequence[Curve], threshold: float) -> str:
    """Epochs each seed's curve needs to first reach `threshold` (`epochs_to_reach`), as mean ± std; a seed
    that never reaches it makes the row '>E (k of n)'."""
    reached = [epochs_to_reach(c, threshold) for c in curves]
    if not reached:
        return "-"
    if None in reached:
        most = max(c.epochs[-1] for c in curves) + 1
        return f">{most} ({sum(r is not None for r in reached)} of {len(reached)} seeds reach it)"
    return mean_std([float(r) for r in reached])


def differs(a: Sequence[float], b: Sequence[float]) -> str:
    """The report's rule: a difference of means inside the larger of the two seeds' std is 'no difference'."""
    if len(a) < 2 or len(b) < 2:
        return "n < 2"
    gap = statistics.fmean(a) - statistics.fmean(b)
    spread = max(statistics.stdev(a), statistics.stdev(b))
    return "no difference" if abs(gap) <= spread else f"{gap:+.2f}"


def _grid_point(g: Mapping[str, Any], chosen: bool) -> str:
    text = f"{_point(g['point'])}: {'-' if g['score'] is None else format(g['score'], '.2f')}"
    return f"**{text}**" if chosen else text


def study_markdown(result: Mapping[str, Any], reference: str | None = None) -> str:
    """study.md's text from study.json's content (`lfi.train.study.run_study`)."""
    rows = result["rows"]
    results = {name: row_results(row["runs"]) for name, row in rows.items()}
    tests = sorted({t for r in results.values() for t in r["tests"]})
    reference = reference or result.get("reference") or next(iter(rows))
    threshold = result.get("threshold")
    lines = [f"# Study `{result['study']}`", "",
             f"Hyper-parameters chosen per row on `{result['select']}` at the last epoch (held-out split of train, "
             f"seed {result['seeds'][0]}); then seeds {result['seeds']}. Test sets were never used for a choice. "
             f"Δ: difference of means to row `{reference}` where it exceeds the larger seed std, else 'no difference'.",
             "", "## Results (top-1 %, mean ± sample std over seeds)", ""]  # fmt: skip
    header = ["row", "teacher", "control", "chosen", "epochs", "held-out val", *(f"test {t}" for t in tests)]
    header += [f"Δ test {t}" for t in tests]
    header += [f"epochs to {threshold:g} val"] if threshold is not None else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ref = results.get(reference, {"tests": {}})
    for name, row in rows.items():
        r = results[name]
        cells = [name, r["teacher"], r["control"], _point(row["chosen"]), r["epochs"], mean_std(r["val"])]
        cells += [mean_std(r["tests"].get(t, [])) for t in tests]
        cells += [
            "-" if name == reference else differs(r["tests"].get(t, []), ref["tests"].get(t, []))
            for t in tests
        ]
        cells += [epochs_to(r["curves"], threshold)] if threshold is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Tuning (seed " + str(result["seeds"][0]) + ", last-epoch val top-1)", ""]
    for name, row in rows.items():
        if row.get("like"):
            lines.append(f"- `{name}`: takes the choice of `{row['like']}`")
            continue
        scores = ", ".join(_grid_point(g, g["point"] == row["chosen"]) for g in row["grid"])
        lines.append(f"- `{name}`: {scores or 'no grid'}")
    return "\n".join(lines) + "\n"


def write_study_report(result: Mapping[str, Any], root: str | Path, reference: str | None = None) -> Path:
    return atomic_write(Path(root) / "study.md", study_markdown(result, reference))
