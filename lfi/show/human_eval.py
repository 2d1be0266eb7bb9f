"""How close a model's interaction maps come to human attention on OSIE (paper Fig. 6); `lfi eval-human`
(`lfi.cli.human`) runs `run_eval_human`.

    student = load_student(run="runs/table1/ivit_s")                      # or model="deit_tiny", checkpoint=...
    table = human_alignment(OSIE("../shared/data"), student, teacher="vit", limit=100)

C_VFM, C_AGT and C_F: the student's class-token maps, mean over its alignment layers and heads, and (in
`run_eval_human`) each converted block's map alone (mean over heads), named ``C_AGT@L<k>`` (a timm model is
converted by `lfi.interactionize` first: freshly converted, P'_q = P_q, so C_AGT = C_VFM and their ratio is 1
until it is trained). Reference rows, the same for every run: C_VLM, a teacher's map computed on the same
images (teacher 'vit': `lfi.extract.vit_teacher`, the VFM->VFM substitute, explaining its own top-1 class since
OSIE has no labels); ``C_VLM (store)``, the maps of an interaction store holding the OSIE images (found by the
hash of each image file's bytes, as `lfi viz` does); ``centre bias``, a centred Gaussian
(`lfi.maps.centre_bias`). All are scored against the OSIE human maps and fixations by
`lfi.evaluate.human` (cosine, CC, NSS, AUC-Judd). Several runs (seeds) are scored in one pass over the images,
and reported as mean ± std over runs of each run's mean; one run as mean ± std over images. Written:
human_alignment.json, .md (tables), .csv and the bar chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lfi.evaluate.human import (
    DEFAULT_RESAMPLE,
    METRICS,
    PAPER_RATIO,
    RATIO_METRICS,
    AlignmentTable,
    aggregate,
    evaluate_human_alignment,
    evaluate_many,
    layer_name,
    layer_ratios,
    split_layer,
)
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.maps import centre_bias
from lfi.models import InteractionViT, create_vit, interactionize
from lfi.show.human import human_alignment_figure
from lfi.show.viz import load_trained, model_input, store_maps, student_maps

#: Short names accepted for a timm model.
MODEL_ALIASES = {"deit_tiny": "deit_tiny_patch16_224", "deit_small": "deit_small_patch16_224"}
#: The teachers that can compute C_VLM here, as captioned; a substitute is never passed off as LLaVA-1.5.
VLM_CAPTIONS = {
    "vit": "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)",
    "none": "no C_VLM (no teacher)",
}
CENTRE = "centre bias"
STORE_MAP = "C_VLM (store)"
STUDENT_MAPS = ("C_VFM", "C_AGT", "C_F")
#: Longest side of the grid the human maps are scored on by default: OSIE's 800x600 at 1/4 (200x150); per
#: layer, ~40 maps an image, full resolution is too slow for a CPU (`lfi.evaluate.human.downsample_human`).
EVAL_SIDE = 200


@dataclass
class Student:
    """An I-ViT in eval mode, the side of its square input and where it comes from (for captions)."""

    model: InteractionViT
    size: int
    description: str


def load_student(
    run: str | Path | None = None, model: str | None = None, checkpoint: str | Path | None = None
) -> Student:
    """The trained student of a run folder, or a timm model (`MODEL_ALIASES` or a timm name) with its
    checkpoint, freshly converted to I-ViT."""
    if run is not None:
        ivit, loaded = load_trained(run)
        m = loaded.cfg.model
        return Student(ivit, loaded.cfg.data.img_size, f"run {run} ({m.name}, variant {m.variant})")
    if model is None or checkpoint is None:
        raise ValueError(
            "give a run folder (--run RUN_DIR), or a timm model with its weights (--model NAME --checkpoint PATH)"
        )
    name = MODEL_ALIASES.get(model, model)
    ivit = interactionize(create_vit(name, checkpoint), inplace=True).eval()
    description = f"{name} from {Path(checkpoint).name}, freshly converted to I-ViT (untrained P'_q = P_q)"
    return Student(ivit, ivit.vit.patch_embed.img_size[0], description)


def map_function(student: Student, teacher: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """uint8 (B, 3, H, W) -> {"C_VFM", ["C_VLM"], "C_AGT": (B, h, w)}, in the order of Fig. 6."""
    if teacher not in VLM_CAPTIONS:
        raise ValueError(f"teacher must be one of {sorted(VLM_CAPTIONS)}, got {teacher!r}")
    if not student.model.config.interaction_queries:
        raise ValueError(
            f"{student.description}: no interaction queries (variant 'vit' or 'ic_original'), so no C_AGT to score"
        )
    vit_teacher = build_teacher("vit") if teacher == "vit" else None
    ivit, size = student.model, student.size

    def maps(images: torch.Tensor) -> dict[str, torch.Tensor]:
        ours = student_maps(ivit, model_input(list(images), (size, size)), layers=ivit.align_layers)
        out = {"C_VFM": ours["C_VFM"].mean((1, 2))}  # (B, layers, heads, h, w) -> (B, h, w)
        if vit_teacher is not None:
            keys = [f"image {i}" for i in range(len(images))]
            t = vit_teacher([{"image": im, "relpath": k} for im, k in zip(images, keys, strict=True)])
            out["C_VLM"] = apply_contrast(t.fore, t.back, "skip", keys).maps
        out["C_AGT"] = ours["C_AGT"].mean((1, 2))
        return out

    return maps


def human_alignment(
    dataset: Dataset | Sequence[Mapping[str, Any]],
    student: Student,
    teacher: str = "vit",
    limit: int | None = None,
    batch_size: int = 8,
) -> AlignmentTable:
    """Scores of the student's (and the teacher's) maps on the first `limit` samples of a human-attention
    dataset (`lfi.data.osie.OSIE`, or samples with image, human_map and fixations)."""
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return evaluate_human_alignment(dataset, map_function(student, teacher), batch_size=batch_size)


def student_map_function(student: Student, per_layer: bool = True) -> SampleFn:
    """uint8 (B, 3, H, W) -> {"C_VFM", "C_AGT", "C_F": (B, h, w)}, each the mean over the alignment layers and
    heads, then (per_layer) ``"<map>@L<k>"`` for every converted block k (mean over heads), from one pass."""
    if not student.model.config.interaction_queries:
        raise ValueError(
            f"{student.description}: no interaction queries (variant 'vit' or 'ic_original'), so no C_AGT to score"
        )
    ivit, size = student.model, student.size
    converted = list(ivit.converted)
    align = [converted.index(layer) for layer in ivit.align_layers]

    def maps(images: torch.Tensor, _samples: Sequence[Mapping[str, Any]] = ()) -> dict[str, torch.Tensor]:
        ours = student_maps(ivit, model_input(list(images), (size, size)))  # (B, layers, heads, h, w)
        out = {n: ours[n][:, align].mean((1, 2)) for n in STUDENT_MAPS}
        if per_layer:
            for n in STUDENT_MAPS:
                for k, layer in enumerate(converted):
                    out[layer_name(n, layer)] = ours[n][:, k].mean(1)
        return out

    return maps


SampleFn = Callable[[torch.Tensor, Sequence[Mapping[str, Any]]], dict[str, torch.Tensor]]


def reference_map_function(
    teacher: str = "vit",
    store_by_name: Mapping[str, torch.Tensor] | None = None,
    centre_grid: tuple[int, int] | None = (14, 14),
) -> SampleFn:
    """(images, samples) -> the reference maps: "C_VLM" (teacher 'vit' run now), "C_VLM (store)" (looked up
    by each sample's ``name`` in `store_by_name`), "centre bias" (a centred Gaussian on `centre_grid`)."""
    if teacher not in VLM_CAPTIONS:
        raise ValueError(f"teacher must be one of {sorted(VLM_CAPTIONS)}, got {teacher!r}")
    vit_teacher = build_teacher("vit") if teacher == "vit" else None

    def maps(images: torch.Tensor, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if vit_teacher is not None:
            keys = [str(s.get("name", f"image {i}")) for i, s in enumerate(samples)]
            t = vit_teacher([{"image": im, "relpath": k} for im, k in zip(images, keys, strict=True)])
            out["C_VLM"] = apply_contrast(t.fore, t.back, "skip", keys).maps
        if store_by_name is not None:
            out[STORE_MAP] = torch.stack([store_by_name[s["name"]].float() for s in samples])
        if centre_grid is not None:
            out[CENTRE] = centre_bias(centre_grid).expand(len(images), *centre_grid)
        return out

    return maps


def osie_store_maps(store: str | Path, osie: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """{OSIE file name: its C_VLM} from an interaction store that holds those images (found by the hash of
    each stimulus file's bytes, whatever path the store keys them under); raises naming the missing ones."""
    from lfi.data.osie import STIMULI_DIR
    from lfi.extract.store import InteractionStore

    datas = [osie.source.read(f"{STIMULI_DIR}/{n}") for n in names]
    return dict(zip(names, store_maps(InteractionStore(store), datas, list(names)), strict=True))


@dataclass
class HumanReport:
    """The scores of one evaluation: a table per run (student maps, mean and per layer), the reference table
    (maps that do not depend on the run; None when there is none), and what each run is."""

    runs: list[AlignmentTable]
    labels: list[str]
    references: AlignmentTable | None = None

    @property
    def over(self) -> str:
        return "images" if len(self.runs) == 1 else "runs"

    def to_dict(self) -> dict[str, Any]:
        """Everything for the JSON file: aggregated maps, per layer, ratios, references, and per run."""
        maps = aggregate(self.runs)
        layers: dict[str, dict[str, Any]] = {}
        for name, stats in maps.items():
            base, layer = split_layer(name)
            if layer is not None:
                layers.setdefault(f"L{layer}", {})[base] = stats
        return {
            "images": self.runs[0].images,
            "resample": self.runs[0].resample,
            "aggregated_over": self.over,
            "runs": self.labels,
            "maps": {n: s for n, s in maps.items() if split_layer(n)[1] is None},
            "layers": layers,
            "ratio_agt_over_vfm": layer_ratios(self.runs),
            "paper_ratio_cosine": PAPER_RATIO,
            "references": aggregate([self.references]) if self.references is not None else {},
            "per_run": [
                {"run": label, "maps": aggregate([t]), "ratio_agt_over_vfm": layer_ratios([t])}
                for label, t in zip(self.labels, self.runs, strict=True)
            ],
        }

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{map: {metric: (mean, std)}} of the plain student maps then the references, for the bar chart."""
        groups = [aggregate(self.runs)]
        if self.references is not None:
            groups.append(aggregate([self.references]))
        out = {}
        for agg in groups:
            for name, stats in agg.items():
                if split_layer(name)[1] is None:
                    out[name] = {m: (s["mean"], s["std"] or 0.0) for m, s in stats.items()}
        return out

    def to_markdown(self) -> str:
        d = self.to_dict()
        metrics = [m for m in METRICS if m in self.runs[0].metrics]
        over = (
            "images" if self.over == "images" else f"{len(self.runs)} runs (each run's mean over the images)"
        )
        lines = [
            f"Mean ± std over {over}; {d['images']} images, grid {d['resample']}. References do not depend on the "
            "run: mean ± std over images.",
            "",
            "| map | " + " | ".join(metrics) + " | n |",
            "|---|" + "---|" * len(metrics) + "---|",
        ]
        rows = [(n, s) for n, s in d["maps"].items()] + [
            (f"{n} (reference)", s) for n, s in d["references"].items()
        ]
        for name, stats in rows:
            n = next(iter(stats.values()))["n"]
            lines.append(f"| {name} | " + " | ".join(_cell(stats[m]) for m in metrics) + f" | {n} |")
        if d["layers"]:
            lines += ["", "Per layer (each block's class-token map alone, mean over heads):", ""]
            lines += ["| layer | map | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
            for layer, per_map in d["layers"].items():
                for name, stats in per_map.items():
                    lines.append(
                        f"| {layer} | {name} | " + " | ".join(_cell(stats[m]) for m in metrics) + " |"
                    )
        ratios = d["ratio_agt_over_vfm"]
        if ratios:
            rm = [m for m in RATIO_METRICS if m in metrics]
            lines += [
                "",
                f"C_AGT / C_VFM, ratio of mean scores (paper, cosine: {PAPER_RATIO}x); 'mean' = the maps averaged "
                "over the alignment layers"
                + ("; mean ± std of the per-run ratios" if self.over == "runs" else "")
                + ":",
                "",
                "| layer | " + " | ".join(f"{m} ratio" for m in rm) + " |",
                "|---|" + "---|" * len(rm),
            ]
            for layer, per_metric in ratios.items():
                lines.append(f"| {layer} | " + " | ".join(_ratio_cell(per_metric[m]) for m in rm) + " |")
        return "\n".join(lines)


def _cell(stat: Mapping[str, Any]) -> str:
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


def write_report(report: HumanReport, out: Path, header: str, title: str) -> list[Path]:
    """human_alignment.json, .md (header + tables), .csv (every row of every run's table when there is one run;
    the aggregated rows otherwise) and the bar chart .png / .pdf (plain maps and references) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"header": header, **report.to_dict()}
    js = out / "human_alignment.json"
    js.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    md = out / "human_alignment.md"
    md.write_text(f"{header}\n\n{report.to_markdown()}\n")
    csv_path = out / "human_alignment.csv"
    _write_summary_csv(report, csv_path)
    summary = report.summary()
    human_alignment_figure(summary, metrics=[m for m in METRICS if m in next(iter(summary.values()))],
                           title=title, path=out / "human_alignment.png")  # fmt: skip
    return [js, md, csv_path, out / "human_alignment.png", out / "human_alignment.pdf"]


def _write_summary_csv(report: HumanReport, path: Path) -> None:
    import csv

    metrics = report.runs[0].metrics
    rows = list(aggregate(report.runs).items())
    if report.references is not None:
        rows += list(aggregate([report.references]).items())
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["map", "layer", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "n"])
        for name, stats in rows:
            base, layer = split_layer(name)
            cells = [_num(stats[m][s]) for m in metrics for s in ("mean", "std")]
            writer.writerow([base, "" if layer is None else layer, *cells, stats[metrics[0]]["n"]])


def _num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"


def run_eval_human(
    data: str | Path,
    out: str | Path,
    run: str | Path | Sequence[str | Path] | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    limit: int = 100,
    teacher: str = "vit",
    batch_size: int = 8,
    store: str | Path | None = None,
    per_layer: bool = True,
    centre: bool = True,
    resample: str = DEFAULT_RESAMPLE,
    eval_side: int | None = EVAL_SIDE,
) -> tuple[str, list[Path]]:
    """Score the students of `run` (one run folder or several, e.g. one per seed), or `model` + `checkpoint`,
    on the first `limit` OSIE stimuli under `data`, with the reference maps (teacher `teacher`, the interaction
    store `store` holding the OSIE images, the centre bias); write the outputs into `out`. Returns the report
    (header and tables) and the files written. eval_side: the longest side of the grid the human maps and
    fixations are scored on (`lfi.evaluate.human.downsample_human`), None = full resolution."""
    from lfi.data.osie import OSIE

    runs = [run] if isinstance(run, str | Path) else list(run or [])
    students = [load_student(r) for r in runs] if runs else [load_student(None, model, checkpoint)]
    osie = OSIE(data)
    dataset = Subset(osie, range(min(limit, len(osie))))
    names = [osie.names[i] for i in dataset.indices]
    store_by_name = osie_store_maps(store, osie, names) if store is not None else None
    grid = students[0].model.patch_grid((students[0].size,) * 2)
    sources: dict[str, SampleFn] = {
        f"run {i}": student_map_function(s, per_layer) for i, s in enumerate(students)
    }
    refs = reference_map_function(teacher, store_by_name, grid if centre else None)
    if teacher != "none" or store_by_name is not None or centre:
        sources["references"] = refs
    tables = evaluate_many(dataset, sources, batch_size, resample, eval_side)  # type: ignore[arg-type]
    report = HumanReport(
        [tables[f"run {i}"] for i in range(len(students))],
        [s.description for s in students],
        tables.get("references"),
    )
    layers = list(students[0].model.align_layers)
    refs_text = [VLM_CAPTIONS[teacher]]
    if store is not None:
        refs_text.append(f"{STORE_MAP}: interaction store {store}")
    if centre:
        refs_text.append(
            f"{CENTRE}: centred Gaussian, sigma 1/4 of each side, on the {grid[0]}x{grid[1]} grid"
        )
    models = "; ".join(s.description for s in students)
    scored = (
        "full resolution" if eval_side is None else f"a longest side of {eval_side} px (fixations as votes)"
    )
    plural = "s" if len(students) > 1 else ""
    header = (
        f"Human alignment on OSIE ({data}), first {len(names)} stimuli, human maps from eye fixations (Gaussian "
        f"sigma {osie.sigma:g} px); NSS and AUC-Judd at the fixated pixels; scored at {scored}.  \n"
        f"Model{plural}: {models}; C_VFM / C_AGT / C_F: class-token rows, mean over alignment layers {layers} "
        f"and heads.  \nReferences: {'; '.join(refs_text)}."
    )
    n_runs = f", {len(students)} runs" if len(students) > 1 else ""
    title = f"Human alignment, {len(names)} OSIE images{n_runs}; {VLM_CAPTIONS[teacher]}"
    written = write_report(report, Path(out), header, title)
    return f"{header}\n\n{report.to_markdown()}", written
