"""How close a model's interaction maps come to human attention on OSIE (paper Fig. 6), the runner of
`lfi eval-human` (`lfi.cli.human`): `evaluate_human` scores, `lfi.show.human_report` writes the tables and chart.

    student = load_student(run="runs/table1/ivit_s")                      # or model="deit_tiny", checkpoint=...
    table = human_alignment(OSIE("../shared/data"), student, teacher="vit", limit=100)

C_VFM, C_AGT and C_F: the student's class-token maps as trained (`lfi.maps.attention_to_grid`), mean over its
alignment layers, and (in `evaluate_human`) each converted block's map alone, named ``C_AGT@L<k>`` (a timm model
is converted by `lfi.interactionize` first: freshly converted, P'_q = P_q, so C_AGT = C_VFM and their ratio is 1
until it is trained). Reference rows, the same for every run: C_VLM, a teacher's map computed here on the same
images (teacher 'vit': `lfi.extract.vit_teacher`, the VFM->VFM substitute, explaining its own top-1 class since
OSIE has no labels); ``C_VLM (store)``, the maps of an interaction store holding the OSIE images (found by the
hash of each image file's bytes, as `lfi viz` does); ``centre bias``, a centred Gaussian
(`lfi.maps.centre_bias`). All are scored against the OSIE human maps and fixations by
`lfi.metrics.human` (cosine, CC, NSS, AUC-Judd). Several runs (seeds) are scored in one pass over the images,
and reported as mean ± std over runs of each run's mean; one run as mean ± std over images. Several rows
(ViT, I-ViT, controls, each over its seeds) are scored in the same pass and compared in one table
(`HumanComparison`); a plain ViT row has C_VFM only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lfi.evaluate.maps import load_trained, model_input, store_maps, student_maps
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.extract.vit_teacher import default_weights
from lfi.maps import centre_bias
from lfi.metrics.human import (
    DEFAULT_RESAMPLE,
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
from lfi.models import InteractionViT, create_vit, interactionize

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
#: layer, ~40 maps an image, full resolution is too slow for a CPU (`lfi.metrics.human.downsample_human`).
EVAL_SIDE = 200
#: Metrics of the per-layer maps by default: the ratio's metrics; AUC-Judd (one ranking per map) would make
#: a 12-layer run ~13x slower to score, and is reported for the maps averaged over the alignment layers.
LAYER_METRICS = RATIO_METRICS


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
        out = {"C_VFM": ours["C_VFM"].mean(1)}  # (B, layers, h, w) -> (B, h, w)
        if vit_teacher is not None:
            keys = [f"image {i}" for i in range(len(images))]
            t = vit_teacher([{"image": im, "relpath": k} for im, k in zip(images, keys, strict=True)])
            out["C_VLM"] = apply_contrast(t.fore, t.back, "skip", keys).maps
        out["C_AGT"] = ours["C_AGT"].mean(1)
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
    """uint8 (B, 3, H, W) -> {"C_VFM", "C_AGT", "C_F": (B, h, w)}, each the trained map (`student_maps`) averaged
    over the alignment layers, then (per_layer) ``"<map>@L<k>"`` for every converted block k, from one pass.
    A plain ViT (variant 'vit' or 'ic_original': no interaction queries) has C_VFM only, read on the same
    alignment layers, so that it is the baseline of an I-ViT converted the same way."""
    ivit, size = student.model, student.size
    names = STUDENT_MAPS if ivit.config.interaction_queries else ("C_VFM",)
    converted = list(ivit.converted)
    align = [converted.index(layer) for layer in ivit.align_layers]

    def maps(images: torch.Tensor, _samples: Sequence[Mapping[str, Any]] = ()) -> dict[str, torch.Tensor]:
        ours = student_maps(ivit, model_input(list(images), (size, size)))  # (B, layers, h, w)
        out = {n: ours[n][:, align].mean(1) for n in names}
        if per_layer:
            for n in names:
                for k, layer in enumerate(converted):
                    out[layer_name(n, layer)] = ours[n][:, k]
        return out

    return maps


SampleFn = Callable[[torch.Tensor, Sequence[Mapping[str, Any]]], dict[str, torch.Tensor]]


def teacher_weights(data: str | Path) -> Path:
    """The DeiT-Tiny of teacher 'vit': in ``<data>/weights/`` (float32, else bfloat16) where it is there, else
    the shared default (``$LFI_DATA/weights``, else ../shared/data/weights beside the repository)."""
    found = default_weights(Path(data) / "weights")
    return found if found.is_file() else default_weights()


def reference_map_function(
    teacher: str = "vit",
    store_by_name: Mapping[str, torch.Tensor] | None = None,
    centre_grid: tuple[int, int] | None = (14, 14),
    weights: Path | None = None,
) -> SampleFn:
    """(images, samples) -> the reference maps: "C_VLM" (teacher 'vit' run now, with `weights`, default the
    shared DeiT-Tiny), "C_VLM (store)" (looked up by each sample's ``name`` in `store_by_name`), "centre bias"
    (a centred Gaussian on `centre_grid`)."""
    if teacher not in VLM_CAPTIONS:
        raise ValueError(f"teacher must be one of {sorted(VLM_CAPTIONS)}, got {teacher!r}")
    vit_teacher = build_teacher("vit", weights=weights) if teacher == "vit" else None

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
    from lfi.store.shards import InteractionStore

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

    @property
    def groups(self) -> list[list[AlignmentTable]]:
        """The tables aggregated together: the runs, then the references (when there are some)."""
        return [self.runs] + ([[self.references]] if self.references is not None else [])

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{map: {metric: (mean, std)}} of the plain student maps then the references, for the bar chart."""
        return plain_summary(self.groups)


def plain_summary(groups: Sequence[Sequence[AlignmentTable]]) -> dict[str, dict[str, tuple[float, float]]]:
    """{map: {metric: (mean, std)}} of the maps that are not per layer, each group aggregated (`aggregate`)."""
    out = {}
    for tables in groups:
        for name, stats in aggregate(tables).items():
            if split_layer(name)[1] is None:
                out[name] = {m: (s["mean"], s["std"] or 0.0) for m, s in stats.items()}
    return out


@dataclass
class HumanComparison:
    """Several rows (e.g. ViT, I-ViT and controls, each a `HumanReport` over its seeds) scored on the same
    images, and the reference maps, scored once."""

    rows: dict[str, HumanReport]
    references: AlignmentTable | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON file: images, grid, each row's `HumanReport.to_dict` (less what is shared) and references."""
        first = next(iter(self.rows.values())).runs[0]
        shared = ("images", "resample", "paper_ratio_cosine", "references")
        return {
            "images": first.images,
            "resample": first.resample,
            "paper_ratio_cosine": PAPER_RATIO,
            "rows": [
                {"row": label, **{k: v for k, v in r.to_dict().items() if k not in shared}}
                for label, r in self.rows.items()
            ],
            "references": aggregate([self.references]) if self.references is not None else {},
        }

    def figure_rows(self) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
        """{row: {map: {metric: (mean, std)}}} of the plain maps, for `human_rows_figure`."""
        return {label: r.summary() for label, r in self.rows.items()}

    def figure_references(self) -> dict[str, dict[str, tuple[float, float]]]:
        return plain_summary([[self.references]]) if self.references is not None else {}


RunPath = str | Path


def as_rows(run: RunPath | Sequence[RunPath] | Sequence[Sequence[RunPath]] | None) -> list[list[Path]]:
    """Run folders as rows: one folder -> one row of one run; a list of folders -> one row (e.g. its seeds);
    a list of lists -> one row per list."""
    if run is None:
        return []
    if isinstance(run, str | Path):
        return [[Path(run)]]
    items = list(run)
    if all(isinstance(r, str | Path) for r in items):
        return [[Path(r) for r in items]] if items else []
    return [[Path(r) for r in row] for row in items]  # type: ignore[union-attr]


def row_labels(rows: Sequence[Sequence[Path]]) -> list[str]:
    """A name per row: the folder its runs share, relative to the folder all the rows share ("probe" for
    study/probe/seed0 and study/probe/seed1 beside study/full/seed0 ...); one row: that folder's name."""
    import os

    parents = [Path(os.path.commonpath([r.resolve() for r in row])) for row in rows]
    root = Path(os.path.commonpath(parents)) if len(parents) > 1 else parents[0].parent
    labels = [p.relative_to(root).as_posix() if p != root else p.name for p in parents]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"eval-human: rows {repeated} are given more than once (each --run is one row)")
    return labels


@dataclass
class HumanEvaluation:
    """What `evaluate_human` scored: one row (`HumanReport`) or several (`HumanComparison`), the header saying
    what was scored on what, and the chart's title."""

    report: HumanReport | HumanComparison
    header: str
    title: str


def evaluate_human(
    data: str | Path,
    run: RunPath | Sequence[RunPath] | Sequence[Sequence[RunPath]] | None = None,
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
    layer_metrics: Sequence[str] = LAYER_METRICS,
) -> HumanEvaluation:
    """Score the students of `run` (`as_rows`: one run folder, several as one row, e.g. its seeds, or a list
    of rows: ViT, I-ViT, controls ...), or `model` + `checkpoint`, on the first `limit` OSIE stimuli under
    `data`, with the reference maps (teacher `teacher`, the interaction store `store` holding the OSIE images,
    the centre bias), in one pass over the images. eval_side: the longest side of the grid the human maps and
    fixations are scored on (`lfi.metrics.human.downsample_human`), None = full resolution. layer_metrics: the
    metrics of the per-layer maps (`LAYER_METRICS`; the maps averaged over the alignment layers get all four).
    `lfi.show.human_report.write_report` writes what this returns."""
    from lfi.data.osie import OSIE

    rows = as_rows(run)
    labels = row_labels(rows) if rows else ["model"]
    students = [[load_student(r) for r in row] for row in rows] or [[load_student(None, model, checkpoint)]]
    osie = OSIE(data)
    dataset = Subset(osie, range(min(limit, len(osie))))
    names = [osie.names[i] for i in dataset.indices]
    store_by_name = osie_store_maps(store, osie, names) if store is not None else None
    first = students[0][0]
    centre_grid = first.model.patch_grid((first.size,) * 2) if centre else None
    sources: dict[str, SampleFn] = {
        f"{r} {i}": student_map_function(s, per_layer)
        for r, row in enumerate(students)
        for i, s in enumerate(row)
    }
    if teacher != "none" or store_by_name is not None or centre_grid is not None:
        weights = teacher_weights(data) if teacher == "vit" else None
        sources["references"] = reference_map_function(teacher, store_by_name, centre_grid, weights)
    tables = evaluate_many(dataset, sources, batch_size, resample, eval_side, layer_metrics)  # type: ignore[arg-type]
    report = _report(tables, students, labels)
    header = _header(data, osie.sigma, names, students, labels, teacher, store, centre_grid, eval_side)
    if teacher == "vit":
        header += f"  \nC_VLM teacher weights: {teacher_weights(data)}."
    header += f"  \nPer-layer maps scored on: {', '.join(layer_metrics)}."
    n_runs = sum(len(row) for row in students)
    counted = f", {len(rows)} rows" if len(rows) > 1 else ""
    counted += f", {n_runs} runs" if n_runs > 1 else ""
    title = f"Human alignment, {len(names)} OSIE images{counted}; {VLM_CAPTIONS[teacher]}"
    return HumanEvaluation(report, header, title)


def _report(
    tables: Mapping[str, AlignmentTable], students: Sequence[Sequence[Student]], labels: Sequence[str]
) -> HumanReport | HumanComparison:
    """The tables of `evaluate_many` ({"<row> <run>": ..., "references": ...}) as one row or several."""
    refs = tables.get("references")
    reports = [
        HumanReport([tables[f"{r} {i}"] for i in range(len(row))], [s.description for s in row])
        for r, row in enumerate(students)
    ]
    if len(reports) == 1:
        return HumanReport(reports[0].runs, reports[0].labels, refs)
    return HumanComparison(dict(zip(labels, reports, strict=True)), refs)


def _header(
    data: str | Path,
    sigma: float,
    names: Sequence[str],
    students: Sequence[Sequence[Student]],
    labels: Sequence[str],
    teacher: str,
    store: str | Path | None,
    centre_grid: tuple[int, int] | None,
    eval_side: int | None,
) -> str:
    """What was scored, on what, and against which references: the first lines of the report."""
    refs_text = [VLM_CAPTIONS[teacher]]
    if store is not None:
        refs_text.append(f"{STORE_MAP}: interaction store {store}")
    if centre_grid is not None:
        refs_text.append(
            f"{CENTRE}: centred Gaussian, sigma 1/4 of each side, on the {centre_grid[0]}x{centre_grid[1]} grid"
        )
    if len(students) == 1:
        models = "; ".join(s.description for s in students[0])
        plural = "s" if len(students[0]) > 1 else ""
    else:
        models = "; ".join(
            f"{label} = {len(row)} run{'s' if len(row) > 1 else ''}: " + ", ".join(s.description for s in row)
            for label, row in zip(labels, students, strict=True)
        )
        plural = "s (rows)"
    layers = sorted({tuple(s.model.align_layers) for row in students for s in row})
    layer_text = " or ".join(str(list(x)) for x in layers)
    scored = (
        "full resolution" if eval_side is None else f"a longest side of {eval_side} px (fixations as votes)"
    )
    return (
        f"Human alignment on OSIE ({data}), first {len(names)} stimuli, human maps from eye fixations (Gaussian "
        f"sigma {sigma:g} px); NSS and AUC-Judd at the fixated pixels; scored at {scored}.  \n"
        f"Model{plural}: {models}; C_VFM / C_AGT / C_F: class-token rows as trained (heads averaged, "
        f"then the prefix dropped), mean over alignment layers {layer_text} (a plain ViT: C_VFM only).  \nReferences: {'; '.join(refs_text)}."
    )
