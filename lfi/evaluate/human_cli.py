"""`lfi eval-human`: how close a model's interaction maps come to human attention on OSIE (paper Fig. 6).

    lfi eval-human --run runs/table1/ivit_s --data ../shared/data --limit 100 --out results/human
    lfi eval-human --model deit_tiny --checkpoint ../shared/data/weights/deit_tiny_patch16_224.safetensors ...

C_VFM and C_AGT: the student's class-token maps, mean over its alignment layers and heads (a timm model given
with --model is converted by `lfi.interactionize` first: freshly converted, P'_q = P_q, so C_AGT = C_VFM and
the ratio is 1 until it is trained). C_VLM: a teacher's map computed on the same images (``--teacher vit``:
`lfi.extract.vit_teacher`, the VFM->VFM substitute, explaining its own top-1 class since OSIE has no labels).
All are compared with the OSIE human map by `lfi.evaluate.human.compare_to_human` (cosine, CC, NSS).
Writes human_alignment.md, .csv and the bar chart (.png, .pdf) into --out and prints the C_AGT / C_VFM ratio.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Subset

from lfi.evaluate.human import PAPER_RATIO, AlignmentTable, evaluate_human_alignment
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.models import InteractionViT, create_vit, interactionize
from lfi.show.viz import load_trained, model_input, student_maps

#: Short names accepted by --model.
MODEL_ALIASES = {"deit_tiny": "deit_tiny_patch16_224", "deit_small": "deit_small_patch16_224"}
VLM_CAPTIONS = {
    "vit": "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)",
    "none": "no C_VLM (no teacher)",
}


def build_model(
    run: Path | None, model: str | None, checkpoint: Path | None
) -> tuple[InteractionViT, int, str]:
    """The I-ViT, its input size and a description: from a run folder, or a timm model + checkpoint converted."""
    if run is not None:
        ivit, cfg = load_trained(run)
        return ivit, cfg.data.img_size, f"run {run} ({cfg.model.name}, variant {cfg.model.variant})"
    if model is None or checkpoint is None:
        raise ValueError("give --run RUN_DIR, or --model NAME with --checkpoint PATH")
    name = MODEL_ALIASES.get(model, model)
    ivit = interactionize(create_vit(name, checkpoint), inplace=True).eval()
    size = ivit.vit.patch_embed.img_size[0]
    return ivit, size, f"{name} from {checkpoint.name}, freshly converted to I-ViT (untrained P'_q = P_q)"


def map_function(
    ivit: InteractionViT, size: int, teacher: str
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """uint8 (B, 3, H, W) -> {"C_VFM", ["C_VLM"], "C_AGT": (B, h, w)}, in the order of Fig. 6."""
    vit_teacher = build_teacher("vit") if teacher == "vit" else None

    def maps(images: torch.Tensor) -> dict[str, torch.Tensor]:
        student = student_maps(ivit, model_input(list(images), (size, size)), layers=ivit.align_layers)
        out = {"C_VFM": student["C_VFM"].mean((1, 2))}
        if vit_teacher is not None:
            keys = [f"image {i}" for i in range(len(images))]
            t = vit_teacher([{"image": im, "relpath": k} for im, k in zip(images, keys, strict=True)])
            out["C_VLM"] = apply_contrast(t.fore, t.back, "skip", keys).maps
        if "C_AGT" not in student:
            raise ValueError("the model has no interaction queries (variant 'vit'/'ic_original'): no C_AGT")
        out["C_AGT"] = student["C_AGT"].mean((1, 2))
        return out

    return maps


def evaluate(
    data: Path, limit: int, ivit: InteractionViT, size: int, teacher: str, batch_size: int = 8
) -> AlignmentTable:
    """Human alignment of the first `limit` OSIE stimuli (sorted by name) under `data`."""
    from lfi.data.osie import OSIE

    dataset = OSIE(data)
    subset = Subset(dataset, range(min(limit, len(dataset))))
    return evaluate_human_alignment(subset, map_function(ivit, size, teacher), batch_size=batch_size)


def write_outputs(table: AlignmentTable, out: Path, header: str, teacher: str) -> list[Path]:
    """human_alignment.md (header + table), .csv and the bar chart .png / .pdf in `out`."""
    from lfi.show.human import human_alignment_figure

    out.mkdir(parents=True, exist_ok=True)
    md = out / "human_alignment.md"
    md.write_text(f"{header}\n\n{table.to_markdown()}\n")
    csv = table.write_csv(out / "human_alignment.csv")
    n = next(iter(next(iter(table.scores.values())).values())).numel()
    title = f"Human alignment, {n} OSIE images; {VLM_CAPTIONS[teacher]}"
    human_alignment_figure(table.summary(), title=title, path=out / "human_alignment.png")
    return [md, csv, out / "human_alignment.png", out / "human_alignment.pdf"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """``lfi eval-human --run RUN_DIR | --model NAME --checkpoint PATH --data ROOT [--limit N] --out DIR``."""
    p = subparsers.add_parser("eval-human", help="human alignment of C_VFM / C_VLM / C_AGT on OSIE (Fig. 6)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", type=Path, help="run folder of `lfi train` (config.yaml + model.safetensors)"
    )
    source.add_argument("--model", help=f"timm model name or {sorted(MODEL_ALIASES)}, converted to I-ViT")
    p.add_argument("--checkpoint", type=Path, help="safetensors weights for --model")
    p.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder holding osie/osie-dev.zip"
    )
    p.add_argument("--limit", type=int, default=100, help="first N OSIE stimuli (default 100)")
    p.add_argument(
        "--teacher", choices=sorted(VLM_CAPTIONS), default="vit", help="C_VLM source (default vit)"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    ivit, size, what = build_model(args.run, args.model, args.checkpoint)
    table = evaluate(args.data, args.limit, ivit, size, args.teacher, args.batch_size)
    header = (
        f"Human alignment on OSIE ({args.data}), first {args.limit} stimuli, human maps from eye fixations "
        f"(Gaussian sigma 24 px).  \nModel: {what}; C_VFM / C_AGT: class-token rows, mean over alignment layers "
        f"{list(ivit.align_layers)} and heads.  \n{VLM_CAPTIONS[args.teacher]}."
    )
    written = write_outputs(table, args.out, header, args.teacher)
    print(header + "\n\n" + table.to_markdown())
    print(
        f"C_AGT / C_VFM cosine ratio: {table.ratio():.2f}x (paper: {PAPER_RATIO}x, with a trained I-ViT and LLaVA-1.5)"
    )
    print("wrote " + ", ".join(map(str, written)))
    return 0
