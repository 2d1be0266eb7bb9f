"""`lfi report RUN_DIR...`: the paper's Tables 1-7 as Markdown, from finished run folders.

A classification run folder (`lfi.train.run`) holds config.yaml, metrics.json ({"test": {set: {"acc1",
"acc5", "n"}}, "best_val_acc1", ...}), logs/metrics.csv and model.safetensors; a detection run folder
(`lfi.train.detection`) holds config.yaml and metrics.json ({"metrics": {"mAP", "AP_S", ..., "AP_mask"}} in
COCOeval's [0, 1]). Each run is placed in a table, row and column by its config alone:

  Table 1  TinyImageNet, pretrained checkpoint, ViT vs I-ViT (variant vit / iq_ic_gc), row = model size
  Table 2  TinyImageNet from scratch (no checkpoint), row = ViT / I-ViT, column = data.ratio
  Table 3  TinyImageNet, pretrained, row = Table 3 variant (ViT-L/I-ViT-L runs appear in Table 1 and 3,
           as in the paper)
  Table 4  PACS, column = the unseen (test) domain;  Table 5  VLCS, the same
  Table 6  detection/segmentation at full data, row = with / without C_VLM
  Table 7  detection with little data (data.fraction < 1 or Conditional DETR), row = with / without C_VLM
  other    anything else (e.g. `lfi demo`'s synthetic runs): row = model, column = test set

Runs whose configs differ only in seeds (and paths, devices) are pooled: mean ± sample std over seeds.
Runs landing in the same cell with other settings get their own row, labelled with the keys that differ.
The paper's number is shown beside ours only where the row matches the paper's setting (same model size,
same table); each table names the dataset and the teachers, and says whether a teacher is the paper's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from lfi.show.curves import read_curve

#: How a teacher is named in tables and figure captions. Only 'llava' is the paper's teacher.
TEACHER_LABELS = {
    "llava": "LLaVA-1.5 (the paper's VLM teacher)",
    "vit": "DeiT-Tiny ViT, VFM->VFM substitute (not the paper's LLaVA-1.5)",
    "oracle": "ground-truth box/mask oracle (not the paper's LLaVA-1.5)",
    "none": "none (no interaction maps)",
}

TABLE_TITLES = {
    "1": "Table 1. Comparison of I-ViT and ViT on TinyImageNet (top-1 %)",
    "2": "Table 2. I-ViT vs ViT at different training data ratios on TinyImageNet, from scratch (top-1 %)",
    "3": "Table 3. Ablations on Interaction Queries (IQ), Interaction Constraint (IC), Gated Control (GC) (top-1 %)",
    "4": "Table 4. Zero-shot cross-domain: ViT vs I-ViT on PACS, one column per unseen domain (top-1 %)",
    "5": "Table 5. Zero-shot cross-domain: ViT vs I-ViT on VLCS, one column per unseen domain (top-1 %)",
    "6": "Table 6. COCO 2017 detection / segmentation, with and without C_VLM (val, AP %)",
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
    "seed", "experiment", "paper_row", "output_dir", "output", "device", "data.root", "data.num_workers",
    "data.split_seed", "data.seed", "teacher.store", "optim.num_workers", "trainer.accelerator",
    "trainer.devices", "trainer.strategy", "trainer.num_nodes", "trainer.enable_progress_bar",
    "trainer.log_every_n_steps", "trainer.precision",
}  # fmt: skip
_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g"}
_DATASETS = {"tinyimagenet": "TinyImageNet", "pacs": "PACS", "vlcs": "VLCS", "synthetic": "synthetic (lfi demo)",
             "coco": "COCO 2017", "voc": "Pascal VOC"}  # fmt: skip


def teacher_label(name: str) -> str:
    """How teacher `name` is captioned: whether it is the paper's LLaVA-1.5 is always said."""
    return TEACHER_LABELS.get(name, f"{name} (not the paper's LLaVA-1.5)")


def model_label(timm_name: str, timm_kwargs: dict[str, Any] | None = None) -> str:
    """'vit_large_patch16_224' -> 'L/16' (a patch_size in timm_kwargs wins); names without a size and patch
    come back as they are."""
    parts = timm_name.split("_")
    size = next((_SIZES[p] for p in parts if p in _SIZES), None)
    patch = (timm_kwargs or {}).get("patch_size") or next(
        (p.removeprefix("patch") for p in parts if p.startswith("patch")), None
    )
    return f"{size}/{patch}" if size and patch else timm_name


@dataclass
class Run:
    """One run folder: its raw config and metrics, and where it lands in the report."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    table: str = "other"
    row: str = ""
    values: dict[str, float] = field(default_factory=dict)  # column -> our number
    teacher: str = "none"
    dataset: str = ""
    paper_model: bool = False  # the paper's model for this table (sizes and architecture match)

    @property
    def seed(self) -> Any:
        return self.config.get("seed", self.config.get("data", {}).get("seed"))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys that define the experiment (pooled keys dropped; checkpoint paths reduced to set /
    not set, since the same weights live at different paths on different machines)."""
    flat = {k: v for k, v in _flatten(config).items() if k not in _POOLED_KEYS}
    for key in ("model.checkpoint", "loss.kd.checkpoint", "loss.kd.synsets"):
        if key in flat:
            flat[key] = flat[key] is not None
    return flat


def load_run(path: str | Path) -> Run:
    """Read a run folder and place it (module docstring). Raises naming the file that is missing or bad."""
    path = Path(path)
    files = {name: path / name for name in ("config.yaml", "metrics.json")}
    for name, file in files.items():
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no {name} (is this a finished `lfi train` run folder?)")
    config = yaml.safe_load(files["config.yaml"].read_text()) or {}
    metrics = json.loads(files["metrics.json"].read_text())
    run = Run(path, config, metrics)
    if "test" in metrics:
        _place_classification(run)
    elif isinstance(metrics.get("metrics"), dict):
        _place_detection(run)
    else:
        raise ValueError(
            f"{files['metrics.json']}: neither 'test' (classification) nor 'metrics' (detection)"
        )
    return run


def _place_classification(run: Run) -> None:
    cfg, tests = run.config, run.metrics["test"]
    model, data = cfg.get("model", {}), cfg.get("data", {})
    variant, dataset = model.get("variant", "vit"), data.get("dataset", "")
    size = model_label(model.get("name", "?"), model.get("timm_kwargs"))
    kd = cfg.get("loss", {}).get("kd", {}).get("weight", 0) or 0
    prefix = "ViT" if variant == "vit" else "I-ViT"
    # variants without a constraint read no maps, whatever teacher the config names
    reads_maps = variant not in ("vit", "iq_gc")
    run.teacher = cfg.get("teacher", {}).get("name", "none") if reads_maps else "none"
    run.dataset = _DATASETS.get(dataset, dataset)
    run.row = f"{prefix}-{size}" + (" + KD (result-oriented)" if kd > 0 else "")
    per_set = {name: float(v["acc1"]) for name, v in tests.items() if isinstance(v, dict) and "acc1" in v}
    pretrained = model.get("checkpoint") is not None
    if dataset == "tinyimagenet" and not pretrained and variant in ("vit", "iq_ic_gc"):
        run.table = "2"
        ratio = float(data.get("ratio", 1.0))
        run.values = {f"{ratio * 100:g}%": per_set.get("val", math.nan)}
        run.dataset += f", {ratio * 100:g}% of train"
        run.paper_model = size == "L/16" and kd == 0
    elif dataset == "tinyimagenet" and pretrained and variant in ("vit", "iq_ic_gc"):
        run.table, run.values = "1", {"top-1": per_set.get("val", math.nan)}
        run.paper_model = kd == 0
    elif dataset == "tinyimagenet" and variant in TABLE3_ROWS:
        run.table, run.values = "3", {"top-1": per_set.get("val", math.nan)}
        run.row, run.paper_model = f"{TABLE3_ROWS[variant]}, {size}", size == "L/16" and pretrained
    elif dataset in ("pacs", "vlcs"):
        run.table = "4" if dataset == "pacs" else "5"
        run.values = {name: acc for name, acc in per_set.items() if name != "val"}
        run.dataset += f", trained on {', '.join(data.get('train_domains') or ['all domains'])}"
        run.paper_model = size == "L/16" and kd == 0
    else:
        run.table, run.values = "other", per_set
        run.dataset += ", " + ", ".join(f"{k}: {v}" for k, v in sorted(_flatten(data).items())
                                        if k in ("img_size", "ratio"))  # fmt: skip


def _place_detection(run: Run) -> None:
    cfg, m = run.config, run.metrics["metrics"]
    data, teacher, model = cfg.get("data", {}), cfg.get("teacher", {}), cfg.get("model", {})
    arch = {"detr": "DETR", "conditional_detr": "Conditional-DETR"}.get(
        cfg.get("arch", ""), cfg.get("arch", "?")
    )
    size = model.get("size", "?").upper()
    fraction = float(data.get("fraction", 1.0))
    with_maps = teacher.get("name", "none") != "none"
    # the teacher that made the maps: the oracle itself, or the extracting teacher recorded for a store
    run.teacher = "none" if not with_maps else teacher.get("teacher") or teacher.get("name")
    run.dataset = _DATASETS.get(data.get("dataset", ""), data.get("dataset", "?"))
    run.dataset += f", {fraction * 100:g}% of train" if fraction < 1 else ""
    mark = "w/ C_VLM" if with_maps else "w/o C_VLM"
    scaled = {k: 100.0 * float(v) for k, v in m.items()}  # COCOeval's [0, 1] -> %
    if cfg.get("arch") == "conditional_detr" or fraction < 1:
        run.table, run.row = "7", f"{mark}, {arch}-{size}"
        run.values = {k: scaled.get(k, math.nan) for k in ("mAP", "AP_S", "AP_M", "AP_L")}
        run.paper_model = size == "R50" and arch == "Conditional-DETR"
    else:
        task = cfg.get("task", "detection")
        run.table, run.row = "6", f"{task} {mark}, {arch}-{size}"
        run.values = {"AP_mask" if task == "segmentation" else "mAP": scaled.get(
            "AP_mask" if task == "segmentation" else "mAP", math.nan)}  # fmt: skip
        run.paper_model = size == "R50" and arch == "DETR"


def table3_copy(run: Run) -> Run | None:
    """A Table 1 ViT-L / I-ViT-L run as its Table 3 row (the paper reports those runs in both tables)."""
    model = run.config.get("model", {})
    size = model_label(model.get("name", "?"), model.get("timm_kwargs"))
    if run.table != "1" or size != "L/16" or run.row.endswith("(result-oriented)"):
        return None
    variant = run.config["model"].get("variant", "vit")
    return replace(run, table="3", row=f"{TABLE3_ROWS[variant]}, {size}")


def _mean_std(values: Sequence[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.fmean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def num_params(run: Run) -> int | None:
    """Numbers in the run's model.safetensors (read from its header, nothing loaded), None without one."""
    path = run.path / "model.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)


@dataclass
class Group:
    """Runs of one table row that differ only in seeds; label = row name (+ the keys that set it apart)."""

    label: str
    runs: list[Run]


def group_runs(runs: Iterable[Run]) -> dict[str, list[Group]]:
    """{table: [Group]} in table order; rows keep the order of first appearance."""
    by_key: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        fp = json.dumps(fingerprint(run.config), sort_keys=True, default=str)
        by_key[(run.table, run.row, fp)].append(run)
    tables: dict[str, list[Group]] = defaultdict(list)
    rows: dict[tuple[str, str], list[list[Run]]] = defaultdict(list)
    for (table, row, _), members in by_key.items():
        rows[(table, row)].append(members)
    for (table, row), variants in rows.items():
        if len(variants) == 1:
            tables[table].append(Group(row, variants[0]))
            continue
        prints = [fingerprint(v[0].config) for v in variants]
        differ = sorted({k for p in prints for k in p if any(p.get(k) != q.get(k) for q in prints)})
        for members, fp in zip(variants, prints, strict=True):
            tables[table].append(Group(f"{row} ({', '.join(f'{k}={fp.get(k)}' for k in differ)})", members))
    order = [*sorted(t for t in tables if t != "other"), *(["other"] if "other" in tables else [])]
    return {t: tables[t] for t in order}


def _columns(groups: Sequence[Group]) -> list[str]:
    cols: list[str] = []
    for g in groups:
        for r in g.runs:
            cols.extend(c for c in r.values if c not in cols)
    return cols


def _paper_value(table: str, group: Group, column: str) -> float | None:
    row = group.label
    if not all(r.paper_model for r in group.runs):
        return None
    return PAPER.get(table, {}).get((row, column))


def table_markdown(table: str, groups: Sequence[Group], figure: str | None = None) -> str:
    """One table: title, dataset and teacher lines, rows (ours mean ± std over seeds | paper), figure link."""
    runs = [r for g in groups for r in g.runs]
    columns = _columns(groups)
    if table == "2":
        columns.sort(key=lambda c: -float(c.rstrip("%")))
    teachers = sorted({r.teacher for r in runs})
    lines = [f"### {TABLE_TITLES[table]}", ""]
    lines.append(f"Dataset: {'; '.join(sorted({r.dataset for r in runs}))}.  ")
    lines.append("Teacher (C_VLM): " + "; ".join(f"{t}: {teacher_label(t)}" for t in teachers) + ".  ")
    lines.append("Ours: mean ± sample std over seeds (one value: a single seed). Paper: the paper's number for "
                 "the same row, only where the row's model is the paper's (its teacher was LLaVA-1.5).")  # fmt: skip
    lines.append("")
    paper_columns = columns if table in PAPER else []
    header = ["row", "teacher", *(f"{c} (ours)" for c in columns), *(f"{c} (paper)" for c in paper_columns)]
    header += ["seeds", "#params"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for g in groups:
        ours = [_mean_std([r.values.get(c, math.nan) for r in g.runs]) for c in columns]
        paper = [_paper_value(table, g, c) for c in paper_columns]
        seeds = ", ".join(str(r.seed) for r in g.runs)
        params = {num_params(r) for r in g.runs} - {None}
        size = f"{next(iter(params)) / 1e6:.1f}M" if len(params) == 1 else "-"
        teacher = "/".join(sorted({r.teacher for r in g.runs}))
        cells = [g.label, teacher, *ours, *("-" if p is None else f"{p:.2f}" for p in paper), seeds, size]
        lines.append("| " + " | ".join(cells) + " |")
    if table == "5":
        llava = " | ".join(f"{d} {v:.2f}" for d, v in PAPER_LLAVA_VLCS.items())
        lines.append(f"\nPaper's LLaVA-1.5 row (the VLM's own accuracy, not run here): {llava}.")
    lines.append("\nRuns: " + ", ".join(f"`{r.path}`" for r in runs) + ".")
    if figure:
        lines.append(f"\n![convergence of these runs]({figure})")
    return "\n".join(lines)


def convergence_for(table: str, groups: Sequence[Group], out: Path, threshold: float | None) -> str | None:
    """Convergence figure (Fig. 3-4) of the runs of one table that have logs/metrics.csv; returns its path
    relative to the report folder, or None when no run has a log."""
    from lfi.show.curves import convergence_figure

    curves = []
    for g in groups:
        for r in g.runs:
            csv = r.path / "logs" / "metrics.csv"
            if csv.is_file():
                curves.append(read_curve(csv, label=f"{g.label}, seed {r.seed}"))
    if not curves:
        return None
    path = out.parent / "figures" / f"table{table}_convergence.png"
    fig_title = f"{TABLE_TITLES[table].split('.')[0]}: validation top-1 per epoch"
    convergence_figure(curves, threshold=threshold, ylabel="val/acc1 (fraction)", title=fig_title, path=path)
    return str(path.relative_to(out.parent))


def build_report(run_dirs: Sequence[str | Path], out: str | Path, threshold: float | None = None) -> str:
    """Write the Markdown report of `run_dirs` to `out` (figures into out's folder / figures); returns it."""
    out = Path(out)
    runs = [load_run(p) for p in run_dirs]
    runs += [copy for copy in map(table3_copy, runs) if copy is not None]
    if not runs:
        raise ValueError("build_report: no run folders")
    parts = ["# lfi report", "", f"{len(runs)} runs. Tables follow the paper's Tables 1-7 (Sec. 5).", ""]
    for table, groups in group_runs(runs).items():
        parts.append(table_markdown(table, groups, convergence_for(table, groups, out, threshold)))
        parts.append("")
    text = "\n".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    """``lfi report RUN_DIR... [--out report.md] [--threshold T]``."""
    p = subparsers.add_parser("report", help="Markdown tables in the layout of the paper's Tables 1-7")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (config.yaml + metrics.json)")
    p.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file (default report.md)")
    p.add_argument("--threshold", type=float, help="val/acc1 (fraction) whose epochs-to-reach the plots mark")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    build_report(args.runs, args.out, args.threshold)
    print(f"wrote {args.out}")
    return 0
