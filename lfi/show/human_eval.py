"""How close a model's interaction maps come to human attention on OSIE (paper Fig. 6); `lfi eval-human`
(`lfi.cli.human`) runs `run_eval_human`.

    student = load_student(run="runs/table1/ivit_s")                      # or model="deit_tiny", checkpoint=...
    table = human_alignment(OSIE("../shared/data"), student, teacher="vit", limit=100)

C_VFM and C_AGT: the student's class-token maps, mean over its alignment layers and heads (a timm model is
converted by `lfi.interactionize` first: freshly converted, P'_q = P_q, so C_AGT = C_VFM and their ratio is 1
until it is trained). C_VLM: a teacher's map computed on the same images (teacher 'vit': `lfi.extract.vit_teacher`,
the VFM->VFM substitute, explaining its own top-1 class since OSIE has no labels). All are scored against the
OSIE human map by `lfi.evaluate.human` (cosine, CC, NSS); the table, a CSV and the bar chart are written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from lfi.evaluate.human import AlignmentTable, evaluate_human_alignment
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.models import InteractionViT, create_vit, interactionize
from lfi.show.human import human_alignment_figure
from lfi.show.viz import load_trained, model_input, student_maps

#: Short names accepted for a timm model.
MODEL_ALIASES = {"deit_tiny": "deit_tiny_patch16_224", "deit_small": "deit_small_patch16_224"}
#: The teachers that can compute C_VLM here, as captioned; a substitute is never passed off as LLaVA-1.5.
VLM_CAPTIONS = {
    "vit": "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)",
    "none": "no C_VLM (no teacher)",
}


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


def write_outputs(table: AlignmentTable, out: Path, header: str, teacher: str) -> list[Path]:
    """human_alignment.md (header + table), .csv and the bar chart .png / .pdf in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "human_alignment.md"
    md.write_text(f"{header}\n\n{table.to_markdown()}\n")
    csv = table.write_csv(out / "human_alignment.csv")
    n = table.scores["C_AGT"]["cosine"].numel()
    title = f"Human alignment, {n} OSIE images; {VLM_CAPTIONS[teacher]}"
    human_alignment_figure(table.summary(), title=title, path=out / "human_alignment.png")
    return [md, csv, out / "human_alignment.png", out / "human_alignment.pdf"]


def run_eval_human(
    data: str | Path,
    out: str | Path,
    run: str | Path | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    limit: int = 100,
    teacher: str = "vit",
    batch_size: int = 8,
) -> tuple[str, list[Path]]:
    """Score the student of `run` (or `model` + `checkpoint`) on the first `limit` OSIE stimuli under `data`;
    write the outputs into `out`. Returns the report (header and table, the C_AGT / C_VFM ratios once) and
    the files written."""
    from lfi.data.osie import OSIE

    student = load_student(run, model, checkpoint)
    osie = OSIE(data)
    table = human_alignment(osie, student, teacher, limit, batch_size)
    n = table.scores["C_AGT"]["cosine"].numel()
    header = (
        f"Human alignment on OSIE ({data}), first {n} stimuli, human maps from eye fixations (Gaussian sigma "
        f"{osie.sigma:g} px).  \nModel: {student.description}; C_VFM / C_AGT: class-token rows, mean over alignment layers "
        f"{list(student.model.align_layers)} and heads.  \n{VLM_CAPTIONS[teacher]}."
    )
    written = write_outputs(table, Path(out), header, teacher)
    return f"{header}\n\n{table.to_markdown()}", written
