"""Welch + Holm verdicts for the rows of a sweep that was not a `lfi study` (PACS, the frozen shortcut rows).

    python3 scripts/sweep_claims.py docs/results/h200/study/pacs --average \
        --claim "I-ViT beats the fine-tuned ViT:ivit_vit:vit_full" ... > docs/results/h200/study/pacs/claims.md

ROOT's sub-folders are the rows; every finished run under a row (ROOT/<row>/**/seed<k>/metrics.json) gives
its top-1 on each of its test sets. --average adds, per seed, the mean over the test sets (PACS: the four
unseen domains). Each claim ("text:row:against") is tested on every test set by Welch's t over seeds, Holm
over all of them together (lfi.show.study.claims_markdown, as `lfi study` does).

--study: ROOT is a `lfi study` folder; each row's runs are the ones its study.json lists (the seeds at the
row's choice), since ROOT/<row> also holds the tuning runs of every grid point. For claims a study file does
not declare (`lfi study` tests only those), e.g. rows added after the study ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from lfi.show.study import claims_markdown, row_results
from lfi.train.runs import finished, load_run


def row_scores(row: Path, average: bool) -> dict[str, list[float]]:
    """{test set: top-1 per seed, in seed order} over the row's finished runs (+ 'average' per seed)."""
    by_seed: dict[str, dict[int, float]] = defaultdict(dict)
    for metrics in sorted(row.rglob("seed*/metrics.json")):
        if not finished(metrics.parent):
            continue
        run = load_run(metrics.parent)
        for name, m in run.metrics["test"].items():
            if isinstance(m, dict) and "acc1" in m:  # test sets, not summaries beside them
                by_seed[name][int(run.metrics["seed"])] = float(m["acc1"])
    if average and by_seed:
        seeds = set.intersection(*(set(s) for s in by_seed.values()))
        by_seed["average"] = {k: statistics.fmean(s[k] for s in by_seed.values()) for k in seeds}
    return {name: [s[k] for k in sorted(s)] for name, s in by_seed.items()}


def study_scores(root: Path, names: set[str]) -> dict[str, dict]:
    """{row: row_results of the runs ROOT/study.json lists for it}, for every row a claim names."""
    path = root / "study.json"
    if not path.is_file():
        raise SystemExit(f"--study: no {path} (run `lfi study ... --report-only` first)")
    rows = json.loads(path.read_text())["rows"]
    missing = sorted(names - set(rows))
    if missing:
        raise SystemExit(f"--study: {path} has no row {', '.join(missing)}")
    return {n: row_results(rows[n]["runs"]) for n in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--claim", action="append", required=True, help="'text:row:against'")
    p.add_argument("--average", action="store_true", help="also test the per-seed mean over test sets")
    p.add_argument("--study", action="store_true", help="ROOT is a `lfi study` folder (its study.json)")
    args = p.parse_args()
    if args.study and args.average:
        p.error("--average is for sweeps, not with --study")
    claims = []
    for c in args.claim:
        text, row, against = c.rsplit(":", 2)
        claims.append({"claim": text, "row": row, "against": against})
    names = {c[k] for c in claims for k in ("row", "against")}
    if args.study:
        results = study_scores(args.root, names)
    else:
        results = {n: {"tests": row_scores(args.root / n, args.average)} for n in names}
    tests = sorted({t for r in results.values() for t in r["tests"]})
    print(f"# Claims over `{args.root}` (top-1 %, Welch's t over seeds, Holm over the table)\n")
    print("\n".join(claims_markdown(claims, results, tests)))


if __name__ == "__main__":
    main()
