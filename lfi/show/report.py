"""The paper's Tables 1-7 as Markdown, from finished run folders; `lfi report` (`lfi.cli.show`) runs
`build_report`.

Every run folder is read by `lfi.train.runs.load_run` (config.yaml, metrics.json, metrics.csv) and placed in a
table, row and columns by its config alone (`place`, keyed by `cfg.task`):

  Table 1  TinyImageNet, pretrained checkpoint, ViT vs I-ViT (variant vit / iq_ic_gc), row = model size
  Table 2  TinyImageNet from scratch (no checkpoint), row = ViT / I-ViT, column = data.ratio
  Table 3  TinyImageNet, row = Table 3 variant (ViT-L / I-ViT-L runs of Table 1 appear in Table 3 too, as in
           the paper)
  Table 4  PACS, column = the unseen (test) domain;  Table 5  VLCS, the same
  Table 6  detection / segmentation (DETR) on all the training data, row = with / without C_VLM
  Table 7  detection with little data (data.ratio < 1) or Conditional DETR, row = with / without C_VLM
  other    anything else (e.g. `lfi demo`'s synthetic runs): row = model, column = test set

Runs whose configs differ only in seeds (and paths, devices) are pooled: mean ± sample std over distinct seeds,
with their count n (reruns of one seed are averaged first: they are not more seeds). A run's test sets are those
of metrics.json and of every later `lfi eval` (eval_metrics.json). Folders that are not finished runs are
skipped and listed. Runs landing in the same cell with other settings get their own row, labelled with the keys
that differ. Every row shows its input size, trained epochs and test-set size n. The paper's number is shown
beside ours only where the row matches the paper's setting (same model size, same table); each table names
the dataset and the teachers, and says whether a teacher is the paper's.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from safetensors import safe_open

from lfi.catalog import dataset_spec, teacher_spec
from lfi.config import Config, config_to_dict
from lfi.files import atomic_write
from lfi.show.curves import monitor, run_curve
from lfi.train.runs import Run, load_run

TABLE_TITLES = {
    "1": "Table 1. Comparison of I-ViT and ViT on TinyImageNet (top-1 %)",
    "2": "Table 2. I-ViT vs ViT at different training data ratios on TinyImageNet, from scratch (top-1 %)",
    "3": "Table 3. Ablations on Interaction Queries (IQ), Interaction Constraint (IC), Gated Control (GC) (top-1 %)",
    "4": "Table 4. Zero-shot cross-domain: ViT vs I-ViT on PACS, one column per unseen domain (top-1 %)",
    "5": "Table 5. Zero-shot cross-domain: ViT vs I-ViT on VLCS, one column per unseen domain (top-1 %)",
    "6": "Table 6. Detection / segmentation (DETR), with and without C_VLM (val, AP %)",
    "7": "Table 7. Low-data detection, with and without C_VLM (AP %)",
    "other": "Other runs (no paper table; top-1 % per test set)",
}

#: Table 3 rows: (IQ, IC, GC) marks, in the paper's order.
TABLE3_ROWS = {
    "vit": "ViT (-, -, -)",
    "iq_gc": "IQ + GC (✓, -, ✓)",
    "ic_original": "IC on original queries (-, ✓, -)",
    "iq_ic": "IQ + IC (✓, ✓, -)",
    "iq_ic_gc": "IQ + IC + GC (✓, ✓, ✓)",
}

#: The paper's numbers, {table: {(row, column): value}}, for reference beside ours.
PAPER: dict[str, dict[tuple[str, str], float]] = {
    "1": {("ViT-S/16", "top-1"): 79.94, ("I-ViT-S/16", "top-1"): 81.52, ("ViT-B/16", "top-1"): 80.24,
          ("I-ViT-B/16", "top-1"): 82.14, ("ViT-L/16", "top-1"): 87.83, ("I-ViT-L/16", "top-1"): 91.08},
    "2": {("ViT-L/16", "100%"): 32.67, ("ViT-L/16", "50%"): 27.04, ("ViT-L/16", "10%"): 12.64,
          ("ViT-L/16", "1%"): 2.86, ("I-ViT-L/16", "100%"): 34.12, ("I-ViT-L/16", "50%"): 29.04,
          ("I-ViT-L/16", "10%"): 15.60, ("I-ViT-L/16", "1%"): 3.07},
    "3": {(f"{TABLE3_ROWS[v]}, L/16", "top-1"): acc for v, acc in
          (("vit", 87.8), ("iq_gc", 89.6), ("ic_original", 80.7), ("iq_ic", 90.3), ("iq_ic_gc", 91.1))},
    "4": {("ViT-L/16", "art_painting"): 45.28, ("ViT-L/16", "cartoon"): 29.89, ("ViT-L/16", "photo"): 49.86,
          ("ViT-L/16", "sketch"): 15.49, ("I-ViT-L/16", "art_painting"): 51.89, ("I-ViT-L/16", "cartoon"): 31.90,
          ("I-ViT-L/16", "photo"): 51.22, ("I-ViT-L/16", "sketch"): 15.18},
    "5": {("ViT-L/16", "PASCAL"): 60.42, ("ViT-L/16", "CALTECH"): 58.59, ("ViT-L/16", "LABELME"): 30.49,
          ("ViT-L/16", "SUN"): 31.86, ("I-ViT-L/16", "PASCAL"): 63.98, ("I-ViT-L/16", "CALTECH"): 68.75,
          ("I-ViT-L/16", "LABELME"): 49.35, ("I-ViT-L/16", "SUN"): 36.61},
    "6": {("detection w/ C_VLM, DETR-R50", "mAP"): 43.6, ("detection w/o C_VLM, DETR-R50", "mAP"): 42.0,
          ("segmentation w/ C_VLM, DETR-R50", "AP_mask"): 33.5,
          ("segmentation w/o C_VLM, DETR-R50", "AP_mask"): 31.1},
    "7": {("w/ C_VLM, Conditional-DETR-R50", "mAP"): 40.9, ("w/ C_VLM, Conditional-DETR-R50", "AP_S"): 4.9,
          ("w/ C_VLM, Conditional-DETR-R50", "AP_M"): 24.2, ("w/ C_VLM, Conditional-DETR-R50", "AP_L"): 53.5,
          ("w/o C_VLM, Conditional-DETR-R50", "mAP"): 38.6, ("w/o C_VLM, Conditional-DETR-R50", "AP_S"): 5.0,
          ("w/o C_VLM, Conditional-DETR-R50", "AP_M"): 22.4, ("w/o C_VLM, Conditional-DETR-R50", "AP_L"): 51.2},
}  # fmt: skip
#: Table 5's LLaVA-1.5 row: the VLM's own accuracy, reported by the paper only (no VLM runs here).
PAPER_LLAVA_VLCS = {"PASCAL": 56.40, "CALTECH": 62.89, "LABELME": 52.58, "SUN": 32.71}

# Config keys that do not change what an experiment measures: runs differing only here are pooled.
_POOLED_KEYS = {
    "seed", "experiment", "paper_row", "output_dir", "output_dir_allow_outside", "data.root", "data.cache_dir", "data.num_workers", "data.split_seed",
    "teacher.store", "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",
    "trainer.precision", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps", "trainer.checkpoint_every_n_epochs", "trainer.sanity_val_steps",
    "trainer.log_maps_every_n_epochs",
}  # fmt: skip
# Paths of weights: the same file lives at different paths on different machines, so only set / not set counts.
_PATH_KEYS = ("model.checkpoint", "loss.kd.checkpoint", "loss.kd.synsets")
_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g"}
_DETRS = {"detr": "DETR", "conditional_detr": "Conditional-DETR"}


def teacher_label(name: str) -> str:
    """How teacher `name` is captioned: whether it is the paper's LLaVA-1.5 is always said."""
    try:
        return teacher_spec(name).label
    except ValueError:  # a run of a teacher this installation does not list
        return f"{name} (not the paper's LLaVA-1.5)"


def model_label(timm_name: str, timm_kwargs: dict[str, Any] | None = None) -> str:
    """'vit_large_patch16_224' -> 'L/16' (a patch_size in timm_kwargs wins); names without a size and patch
    come back as they are."""
    parts = timm_name.split("_")
    size = next((_SIZES[p] for p in parts if p in _SIZES), None)
    patch = (timm_kwargs or {}).get("patch_size") or next(
        (p.removeprefix("patch") for p in parts if p.startswith("patch")), None
    )
    return f"{size}/{patch}" if size and patch else timm_name


#: Where a column's number comes from: (test set name in metrics.json, metric key in it).
Source = tuple[str, str]


@dataclass
class Cell:
    """Where a run lands: table, row, its columns (column -> `Source`) and whether the row is the paper's
    model for that table (so that the paper's number may stand beside ours)."""

    table: str
    row: str
    columns: dict[str, Source]
    paper_model: bool


@dataclass
class Entry:
    """A run placed in the report: its cell and its numbers (column -> ours, in %; column -> test-set size)."""

    run: Run
    table: str
    row: str
    values: dict[str, float]
    n: dict[str, int]
    dataset: str
    paper_model: bool

    @property
    def cfg(self) -> Config:
        return self.run.cfg

    @property
    def teacher(self) -> str:
        """The teacher's name ('none' for every variant that reads no maps), and the control run in its place."""
        t = self.cfg.teacher
        return t.name if t.control == "none" else f"{t.name} maps replaced by the '{t.control}' control"


def tested_sets(run: Run) -> dict[str, dict[str, float]]:
    """The test sets {name: metrics} of metrics.json and of every later `lfi eval` (a set evaluated again: the
    latest), without the summaries across them (mean_acc1, var_acc1)."""
    tests = {**run.metrics["test"], **run.evaluated}
    return {name: m for name, m in tests.items() if isinstance(m, dict)}


def _main_set(run: Run) -> str:
    """The test set a single-column table reads: 'val' (the split of Tables 1-3, 6, 7), else the only one."""
    tests = tested_sets(run)
    if "val" in tests:
        return "val"
    if len(tests) != 1:
        raise ValueError(
            f"{run.files.metrics}: test sets {sorted(tests)} and none named 'val'; this table has one column, "
            "so train the run with one test set (no data.test_domains)"
        )
    return next(iter(tests))


def classification_cell(run: Run) -> Cell:
    """Tables 1-5 (module docstring), or 'other'."""
    m, d = run.cfg.model, run.cfg.data
    size = model_label(m.name, m.timm_kwargs)
    kd = run.cfg.loss.kd_weight > 0
    row = f"{'ViT' if m.variant == 'vit' else 'I-ViT'}-{size}" + (" + KD (result-oriented)" if kd else "")
    pretrained = m.checkpoint is not None
    tests = tested_sets(run)
    if dataset_spec(d.dataset).domains:
        domains = {name: (name, "acc1") for name in tests if name != "val"}
        return Cell("4" if d.dataset == "pacs" else "5", row, domains, size == "L/16" and not kd)
    if d.dataset != "tinyimagenet" or (
        "val" not in tests and len(tests) > 1
    ):  # e.g. the shortcut test's id/ood
        return Cell("other", row, {name: (name, "acc1") for name in tests}, False)
    top1 = (_main_set(run), "acc1")
    if m.variant not in ("vit", "iq_ic_gc"):
        return Cell("3", f"{TABLE3_ROWS[m.variant]}, {size}", {"top-1": top1}, size == "L/16" and pretrained)
    if pretrained:
        return Cell("1", row, {"top-1": top1}, not kd)
    return Cell("2", row, {f"{d.ratio * 100:g}%": top1}, size == "L/16" and not kd)


def detection_cell(run: Run) -> Cell:
    """Table 6 (DETR on all the data) or Table 7 (little data, or Conditional DETR)."""
    cfg, main = run.cfg, _main_set(run)
    m = cfg.model
    arch, size = _DETRS[m.name], m.size.upper()
    mark = {"iq_ic_gc": "w/ C_VLM", "vit": "w/o C_VLM"}.get(m.variant, f"variant {m.variant}")
    paper_variant = m.variant in ("vit", "iq_ic_gc")
    if m.name == "conditional_detr" or cfg.data.ratio < 1:
        columns = {k: (main, k) for k in ("mAP", "AP_S", "AP_M", "AP_L")}
        return Cell(
            "7",
            f"{mark}, {arch}-{size}",
            columns,
            paper_variant and size == "R50" and m.name == "conditional_detr",
        )
    metric = "AP_mask" if cfg.task == "segmentation" else "mAP"
    row = f"{cfg.task} {mark}, {arch}-{size}"
    return Cell("6", row, {metric: (main, metric)}, paper_variant and size == "R50" and m.name == "detr")


#: The placer of each task.
CELLS = {"classification": classification_cell, "detection": detection_cell, "segmentation": detection_cell}


def _percent(task: str, value: Any) -> float:
    """A metric as the tables print it: top-1 is already in %; COCO AP in [0, 1] -> %, where COCOeval's -1
    (no ground truth in an area range) stays undefined."""
    if not isinstance(value, (int, float)):
        return math.nan
    if task == "classification":
        return float(value)
    return 100.0 * value if value >= 0 else math.nan


def place(run: Run) -> Entry:
    """Put a finished run in its table, row and columns (module docstring), with its numbers and test sizes."""
    if not run.metrics:
        raise FileNotFoundError(f"{run.path}: no metrics.json (is this a finished `lfi train` run folder?)")
    tests = run.metrics.get("test")
    if not isinstance(tests, dict) or not tests:
        raise ValueError(
            f"{run.files.metrics}: no 'test' metrics; evaluate the run with `lfi eval {run.path}`"
        )
    cfg, tests = run.cfg, tested_sets(run)
    cell = CELLS[cfg.task](run)
    values, n = {}, {}
    for column, (name, key) in cell.columns.items():
        metrics = tests.get(name, {})
        values[column] = _percent(cfg.task, metrics.get(key))
        if "n" in metrics:
            n[column] = int(metrics["n"])
    dataset = dataset_label(cfg)
    if dataset_spec(cfg.data.dataset).domains:
        trained = cfg.data.train_domains
        dataset += (f", trained on {', '.join(trained)}" if trained
                    else ", trained on every domain but the unseen one" if cfg.data.test_domains
                    else ", trained on all domains")  # fmt: skip
    if cfg.data.ratio < 1 and cell.table != "2":  # Table 2's columns are the ratios
        dataset += f", {cfg.data.ratio * 100:g}% of train"
    return Entry(run, cell.table, cell.row, values, n, dataset, cell.paper_model)


def dataset_label(cfg: Config) -> str:
    """The dataset's name, or, for your own data (class folders, a COCO-format json), its path: an 8-image
    COCO-format folder is not 'COCO 2017'."""
    d = cfg.data
    if d.train_json is not None or d.val_json is not None:
        return f"COCO-format {d.train_json or d.val_json}"
    if d.dataset == "imagefolder":
        return f"class folders {d.train_dir}"
    try:
        return dataset_spec(d.dataset).label
    except ValueError:  # a run of a dataset this installation does not list
        return d.dataset


def table3_copy(entry: Entry) -> Entry | None:
    """A Table 1 ViT-L / I-ViT-L run as its Table 3 row (the paper reports those runs in both tables)."""
    m = entry.cfg.model
    size = model_label(m.name, m.timm_kwargs)
    if entry.table != "1" or size != "L/16" or entry.cfg.loss.kd_weight > 0:
        return None
    return replace(entry, table="3", row=f"{TABLE3_ROWS[m.variant]}, {size}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: Config keys that are a table's columns: runs differing only there share a row (a cell each).
_COLUMN_KEYS = {
    "2": {"data.ratio"},
    "4": {"data.test_domains", "data.train_domains"},
    "5": {"data.test_domains", "data.train_domains"},
}


def fingerprint(cfg: Config, table: str | None = None) -> dict[str, Any]:
    """The config keys that define the experiment: the pooled keys (and the table's column keys) dropped,
    weight paths reduced to set / not set."""
    skip = _POOLED_KEYS | _COLUMN_KEYS.get(table, set())
    flat = {k: v for k, v in _flatten(config_to_dict(cfg)).items() if k not in skip}
    for key in _PATH_KEYS:
        flat[key] = flat[key] is not None
    return flat


def mean_std(values: Sequence[float]) -> str:
    """'mean ± sample std (n=k)' over the defined values; one value alone; '-' when none is defined."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f} (n={len(vals)})"


def seed_values(entries: Sequence[Entry], column: str) -> list[float]:
    """One value per distinct seed: reruns of a seed are averaged (NaN ignored), so they do not count as seeds."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for e in entries:
        value = e.values.get(column, math.nan)
        if not math.isnan(value):
            by_seed[e.cfg.seed].append(value)
    return [statistics.fmean(v) for v in by_seed.values()]


def _seeds(entries: Sequence[Entry]) -> str:
    """The row's distinct seeds, '/'-joined, and the count of runs where seeds were run more than once."""
    seeds = _joined(e.cfg.seed for e in entries)
    reruns = len(entries) > len({e.cfg.seed for e in entries})
    return f"{seeds} ({len(entries)} runs)" if reruns else seeds


def num_params(run: Run) -> int | None:
    """Numbers in the run's model.safetensors (read from its header, nothing loaded), None without one."""
    path = run.files.weights
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)


def _count(n: int) -> str:
    """A parameter count: 22.1M, or 31.4k for the tiny test models."""
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


@dataclass
class Group:
    """Entries of one table row that differ only in seeds; label = row name (+ the keys that set it apart)."""

    label: str
    entries: list[Entry]


def group_runs(entries: Iterable[Entry]) -> dict[str, list[Group]]:
    """{table: [Group]} in table order; rows keep the order of first appearance. Entries of one cell whose
    fingerprints differ are separate rows, each labelled with the keys whose values differ among them."""
    by_key: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        fp = json.dumps(fingerprint(entry.cfg, entry.table), sort_keys=True, default=str)
        by_key[(entry.table, entry.row, fp)].append(entry)
    rows: dict[tuple[str, str], list[list[Entry]]] = defaultdict(list)
    for (table, row, _), members in by_key.items():
        rows[(table, row)].append(members)
    tables: dict[str, list[Group]] = defaultdict(list)
    for (table, row), variants in rows.items():
        if len(variants) == 1:
            tables[table].append(Group(row, variants[0]))
            continue
        prints = [fingerprint(v[0].cfg, table) for v in variants]
        differ = sorted({k for p in prints for k in p if any(p.get(k) != q.get(k) for q in prints)})
        for members, fp in zip(variants, prints, strict=True):
            tables[table].append(Group(f"{row} ({', '.join(f'{k}={fp.get(k)}' for k in differ)})", members))
    order = [*sorted(t for t in tables if t != "other"), *(["other"] if "other" in tables else [])]
    return {t: tables[t] for t in order}


def _columns(groups: Sequence[Group]) -> list[str]:
    cols: list[str] = []
    for g in groups:
        for e in g.entries:
            cols.extend(c for c in e.values if c not in cols)
    return cols


def _paper_value(table: str, group: Group, column: str) -> float | None:
    if not all(e.paper_model for e in group.entries):
        return None
    return PAPER.get(table, {}).get((group.label, column))


def _joined(values: Iterable[Any]) -> str:
    """Distinct values in order of appearance, '/'-joined ('-' for none): seeds of one row share them."""
    distinct = list(dict.fromkeys(str(v) for v in values if v is not None))
    return "/".join(distinct) or "-"


def input_size(cfg: Config) -> str:
    """The student's input: classification's side in px; detection's shorter sides and longest-side cap."""
    d = cfg.data
    if cfg.task == "classification":
        return str(d.img_size)
    return f"{min(d.scales)}-{max(d.scales)}, max {d.max_size}"


def _test_sizes(group: Group, columns: Sequence[str]) -> str:
    """Images per test set: one number when every column shares it, else one per column ('/'-joined)."""
    sizes = [_joined(e.n.get(c) for e in group.entries) for c in columns]
    return sizes[0] if len(set(sizes)) == 1 else "/".join(sizes)


def table_markdown(table: str, groups: Sequence[Group], figure: str | None = None) -> str:
    """One table: title, dataset and teacher lines, rows (ours mean ± std over seeds | paper), figure link."""
    entries = [e for g in groups for e in g.entries]
    columns = _columns(groups)
    if table == "2":
        columns.sort(key=lambda c: -float(c.rstrip("%")))
    lines = [f"### {TABLE_TITLES[table]}", ""]
    lines.append(f"Dataset: {'; '.join(sorted({e.dataset for e in entries}))}.  ")
    teachers = sorted({e.teacher for e in entries})
    lines.append("Teacher (C_VLM): " + "; ".join(f"{t}: {teacher_label(t)}" for t in teachers) + ".  ")
    lines.append("Ours: mean ± sample std over n distinct seeds (one value: a single seed; reruns of a seed averaged). Paper: the paper's number for "
                 "the same row, only where the row's model is the paper's (its teacher was LLaVA-1.5). img: input "
                 "size (px); epochs: trained epochs; n: test images.")  # fmt: skip
    lines.append("")
    paper_columns = columns if table in PAPER else []
    header = ["row", "teacher", *(f"{c} (ours)" for c in columns), *(f"{c} (paper)" for c in paper_columns)]
    header += ["img", "epochs", "n", "seeds", "#params"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for g in groups:
        ours = [mean_std(seed_values(g.entries, c)) for c in columns]
        paper = [_paper_value(table, g, c) for c in paper_columns]
        params = {num_params(e.run) for e in g.entries} - {None}
        cells = [
            g.label,
            _joined(e.teacher for e in g.entries),
            *ours,
            *("-" if p is None else f"{p:.2f}" for p in paper),
            _joined(input_size(e.cfg) for e in g.entries),
            _joined(e.run.metrics.get("epochs") for e in g.entries),
            _test_sizes(g, columns),
            _seeds(g.entries),
            _count(next(iter(params))) if len(params) == 1 else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if table == "5":
        llava = " | ".join(f"{d} {v:.2f}" for d, v in PAPER_LLAVA_VLCS.items())
        lines.append(f"\nPaper's LLaVA-1.5 row (the VLM's own accuracy, not run here): {llava}.")
    lines.append("\nRuns: " + ", ".join(f"`{e.run.path}`" for e in entries) + ".")
    if figure:
        lines.append(f"\n![convergence of these runs]({figure})")
    return "\n".join(lines)


def convergence_for(table: str, groups: Sequence[Group], out: Path, threshold: float | None) -> str | None:
    """Convergence figure (Fig. 3-4) of the runs of one table whose metrics.csv logged their validation metric;
    returns its path relative to the report's folder, or None when no run has such a log."""
    from lfi.show.curves import convergence_figure

    entries = [(g, e) for g in groups for e in g.entries]
    columns = {monitor(e.run) for _, e in entries}
    if len(columns) != 1:  # accuracy and AP do not share an axis; Tables 6-7 hold one task each
        return None
    (column,) = columns
    curves = [
        run_curve(e.run, column, label=f"{g.label}, seed {e.cfg.seed}")
        for g, e in entries
        if e.run.curve(column)
    ]
    if not curves:
        return None
    path = (
        out.parent / "figures" / f"{out.stem}_table{table}_convergence.png"
    )  # two reports in one folder: two files
    title = f"{TABLE_TITLES[table].split('.')[0]}: {column} per epoch"
    unit = " (%)" if column.endswith("acc1") else ""
    convergence_figure(curves, threshold=threshold, ylabel=column + unit, title=title, path=path)
    return str(path.relative_to(out.parent))


def place_finished(run_dirs: Sequence[str | Path]) -> tuple[list[Entry], list[str]]:
    """The entries of the finished runs among `run_dirs`, and why each other folder was skipped (one line each:
    no config.yaml, no metrics.json yet, damaged files). An error if none is a finished run."""
    entries, skipped = [], []
    for path in run_dirs:
        try:
            entries.append(place(load_run(path)))
        except (OSError, ValueError) as error:  # ConfigError is a ValueError
            skipped.append(str(error))
            warnings.warn(f"lfi report: skipped {error}", stacklevel=2)
    if not entries:
        raise ValueError("no finished run folder among " + "; ".join(skipped))
    return entries, skipped


def build_report(run_dirs: Sequence[str | Path], out: str | Path, threshold: float | None = None) -> str:
    """Write the Markdown report of `run_dirs` to `out` (figures into out's folder / figures); returns it.

    threshold: the validation value (the metrics.csv column's unit: top-1 in %, mAP in [0, 1]) whose
    epochs-to-reach the convergence figures mark."""
    if not run_dirs:
        raise ValueError("build_report: no run folders")
    out = Path(out)
    entries, skipped = place_finished(run_dirs)
    placed = len(entries)
    entries += [copy for copy in map(table3_copy, entries) if copy is not None]
    parts = ["# lfi report", "", f"{placed} runs. Tables follow the paper's Tables 1-7 (Sec. 5).", ""]
    for table, groups in group_runs(entries).items():
        parts.append(table_markdown(table, groups, convergence_for(table, groups, out, threshold)))
        parts.append("")
    if skipped:
        parts += ["### Skipped folders (not finished runs)", "", *(f"- {reason}" for reason in skipped), ""]
    text = "\n".join(parts)
    atomic_write(out, text)
    return text
