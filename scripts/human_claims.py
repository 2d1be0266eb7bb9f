"""Welch + Holm verdicts for Fig. 6's claims, from `lfi eval-human`'s json (one value per seed: each seed's
mean over the OSIE images). The `vit` teacher's C_AGT against the unaligned queries' and the controls' maps,
on cosine, CC, NSS and AUC-Judd, on both datasets; Holm over the whole table. Each argument is a folder of
`eval-human` results (its name is the dataset's) or a folder of such folders.

    python3 scripts/human_claims.py docs/results/h200/human > docs/results/h200/human/claims.md
    python3 scripts/human_claims.py docs/results/h100/human/tinyimagenet docs/results/h200/human/pacs \
        > docs/results/h100/human/claims.md     # TinyImageNet re-scored, PACS as before: the same 32 claims
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from lfi.show.stats import holm, verdict, welch

AGAINST = [("iq_gc", "C_AGT"), ("centre", "C_AGT"), ("shuffled", "C_AGT"), ("centre", "C_F")]


def seeds(row: dict, cmap: str, metric: str) -> list[float]:
    return [run["maps"][cmap][metric]["mean"] for run in row["per_run"]]


def dataset_folders(paths: list[Path]) -> list[Path]:
    """The eval-human result folders named by `paths` (each one, or the ones inside it), by dataset name."""
    found = []
    for path in paths:
        inside = [path] if (path / "human_alignment.json.gz").is_file() else sorted(path.iterdir())
        found += [p for p in inside if (p / "human_alignment.json.gz").is_file()]
    if not found:
        raise SystemExit(f"no human_alignment.json.gz in {', '.join(map(str, paths))} nor in their folders")
    return sorted(found, key=lambda p: p.name)


def main(paths: list[Path]) -> None:
    cases = []
    for folder in dataset_folders(paths):
        dataset = folder.name
        with gzip.open(folder / "human_alignment.json.gz") as f:
            data = json.loads(f.read())
        rows = {r["row"].split("/")[0]: r for r in data["rows"]}
        for metric in ("cosine", "cc", "nss", "auc_judd"):
            for other, cmap in AGAINST:
                a, b = seeds(rows["ivit_vit"], "C_AGT", metric), seeds(rows[other], cmap, metric)
                cases.append((dataset, metric, f"{other} {cmap}", a, b))
    tests = [welch(a, b) for *_, a, b in cases]
    print(
        f"# Fig. 6 claims: the `vit` teacher's C_AGT against other maps (Welch over 3 seeds, Holm over {len(cases)})\n"
    )
    print(
        "| dataset | metric | `vit` C_AGT against | `vit` C_AGT | other | verdict |\n|---|---|---|---|---|---|"
    )
    for (dataset, metric, other, a, b), w, h in zip(cases, tests, holm([w.p for w in tests]), strict=True):
        print(
            f"| {dataset} | {metric} | {other} | {sum(a) / len(a):.3f} | {sum(b) / len(b):.3f} | {verdict(w, h, digits=3)} |"
        )


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
