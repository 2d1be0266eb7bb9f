"""A study's tables (`lfi study`): each row's tuning grid with its validation scores, and its seeds' results.

<study root>/study.md   1. results: per row, the chosen point, the held-out val score and every test set's
                           top-1 as mean ± sample std over the seeds (n), and Welch's t test against a
                           reference row (Holm-corrected over the table's comparisons, `lfi.show.stats`)
                        2. claims: the study file's claims (a row against another), each a Welch test,
                           Holm-corrected over all claims and test sets together
                        3. tuning: every grid point of every row with its val score (the choice in bold)
                        4. stale: seed runs trained at an earlier choice of their row (not reported)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfi.files import atomic_write
from lfi.show.curves import Curve, epochs_to_reach, run_curve
from lfi.show.report import mean_std
from lfi.show.stats import holm, verdict, welch
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


def welch_cells(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[str]:
    """Welch's t for each (a, b) pair of seed scores, Holm-corrected over the pairs that can be tested (both
    with >= 2 seeds); a pair that cannot is 'n < 2'. One cell per pair, in order."""
    able = [i for i, (a, b) in enumerate(pairs) if len(a) >= 2 and len(b) >= 2]
    tests = {i: welch(*pairs[i]) for i in able}
    adjusted = dict(zip(able, holm([tests[i].p for i in able]), strict=True))
    return [verdict(tests[i], adjusted[i]) if i in tests else "n < 2" for i in range(len(pairs))]


def claims_markdown(
    claims: Sequence[Mapping[str, str]], results: Mapping[str, Any], tests: Sequence[str]
) -> list[str]:
    """The claims table: each claim (row against row) on each test set, Holm over the whole table."""
    cases = [(c, t) for c in claims for t in tests]
    pairs = [
        (results[c["row"]]["tests"].get(t, []), results[c["against"]]["tests"].get(t, [])) for c, t in cases
    ]
    testable = sum(len(a) >= 2 and len(b) >= 2 for a, b in pairs)
    lines = ["| claim | row | against | test | row top-1 | against top-1 | verdict (Welch t, Holm over the "
             f"{testable} testable) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (c, t), (a, b), cell in zip(cases, pairs, welch_cells(pairs), strict=True):
        lines.append(
            f"| {c['claim']} | {c['row']} | {c['against']} | {t} | {mean_std(a)} | {mean_std(b)} | {cell} |"
        )
    return lines


def at_edge(grid: Mapping[str, Sequence[Any]], chosen: Mapping[str, Any] | None) -> list[str]:
    """The numeric keys of a grid (>= 2 values) whose chosen value is its smallest or largest: a choice
    there may be better outside the grid, so the grid must be extended before the choice is trusted."""
    out = []
    for key, values in grid.items():
        nums = [v for v in values if isinstance(v, int | float)]
        if chosen and len(nums) >= 2 and chosen.get(key) in (min(nums), max(nums)):
            out.append(key)
    return out


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
             f"Δ: difference of means to row `{reference}` with its 95% interval, Welch's t over seeds (two-sided p) "
             "and Holm's p over the table's comparisons; a difference is stated where Holm's p < 0.05. With three "
             "seeds the test has little power: 'no difference shown' is not 'equal'.",
             "", "## Results (top-1 %, mean ± sample std over seeds)", ""]  # fmt: skip
    header = ["row", "teacher", "control", "chosen", "epochs", "held-out val", *(f"test {t}" for t in tests)]
    header += [f"Δ test {t}" for t in tests]
    header += [f"epochs to {threshold:g} val"] if threshold is not None else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ref = results.get(reference, {"tests": {}})
    others = [n for n in rows if n != reference]
    cells_of = iter(
        welch_cells(
            [(results[n]["tests"].get(t, []), ref["tests"].get(t, [])) for n in others for t in tests]
        )
    )
    deltas = {n: [next(cells_of) for _ in tests] for n in others}
    for name, row in rows.items():
        r = results[name]
        cells = [name, r["teacher"], r["control"], _point(row["chosen"]), r["epochs"], mean_std(r["val"])]
        cells += [mean_std(r["tests"].get(t, [])) for t in tests]
        cells += deltas.get(name, ["-"] * len(tests))
        cells += [epochs_to(r["curves"], threshold)] if threshold is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    claims = [c for c in result.get("claims") or [] if c["row"] in results and c["against"] in results]
    if claims:
        lines += ["", "## Claims", ""] + claims_markdown(claims, results, tests)
    lines += ["", "## Tuning (seed " + str(result["seeds"][0]) + ", last-epoch val top-1)", ""]
    for name, row in rows.items():
        if row.get("like"):
            lines.append(f"- `{name}`: takes the choice of `{row['like']}`")
            continue
        scores = ", ".join(_grid_point(g, g["point"] == row["chosen"]) for g in row["grid"])
        # the edge of the points that ran: a point added to the grid but not trained yet moves no edge
        tried = {
            k: [g["point"][k] for g in row["grid"] if g["score"] is not None] for k in row.get("tune") or {}
        }
        edge = at_edge(tried, row["chosen"])
        lines.append(
            f"- `{name}`: {scores or 'no grid'}"
            + (f" (**at the edge** of {', '.join(edge)})" if edge else "")
        )
    lines += stale_markdown(rows)
    return "\n".join(lines) + "\n"


def stale_markdown(rows: Mapping[str, Any]) -> list[str]:
    """The runs left out of the tables because their row's choice moved since they were trained."""
    stale = [(name, run, old) for name, row in rows.items() for run, old in (row.get("stale") or {}).items()]
    if not stale:
        return []
    lines = ["", "## Stale runs (trained at an earlier choice of their row; not in the tables)", ""]
    return lines + [f"- `{name}`: {Path(run).name} at {_point(old)}" for name, run, old in stale]


def write_study_report(result: Mapping[str, Any], root: str | Path, reference: str | None = None) -> Path:
    return atomic_write(Path(root) / "study.md", study_markdown(result, reference))
