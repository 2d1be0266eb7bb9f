"""A trained I-ViT's interaction maps over chosen images (paper Fig. 5); `lfi viz` (`lfi.cli.show`) draws with
`run_viz` what `lfi.evaluate.maps.run_maps` computed: the student's maps of one pass and C_VLM, read from the
run's interaction store or made by a teacher in the evaluate stage (figures run no teacher).

Images were resized whole (no crop) to the model's input size, so every map covers the whole image, as the
overlays of `lfi.show.maps` need.

With ``html`` (``lfi viz --html OUT_DIR``) the same maps go into a browsable page (`lfi.show.html`): per image
the image, C_VLM, C_VFM, C_AGT, C_F, the prediction (top class of the run's classes and its probability) and
the true label: given (``labels``), or else the nearest folder of the image's path named like one of the
run's classes (ImageFolder layouts), or else unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from lfi.evaluate.maps import RunMaps
from lfi.show.maps import interaction_figure, interaction_grid
from lfi.show.save import save_figure

DISPLAY_SIDE = 320  # longest side of the images drawn: panels are ~2 inches, and full-size photos bloat files


# the family name `lfi.extract.vlm.families.llava` records (a literal: figures import no teacher code)
LLAVA_15 = "llava-1.5"


def vlm_title(teacher: str, record: Mapping[str, Any] | None = None) -> str:
    """Column title of the teacher's map; a substitute teacher is never passed off as the paper's LLaVA.

    record: the interaction store's metadata where the maps come from a store: an 'hf' teacher is named by
    the family and checkpoint it recorded, and called LLaVA-1.5 only if its family is LLaVA-1.5.
    """
    if teacher == "vit":
        return "C_VLM (teacher: DeiT-Tiny ViT,\nVFM->VFM substitute)"
    if teacher == "llava":
        return "C_VLM (teacher: LLaVA-1.5)"
    if teacher == "hf":
        return _hf_title(record or {})
    return f"C_VLM (teacher: {teacher},\nnot LLaVA-1.5)"


def _hf_title(record: Mapping[str, Any]) -> str:
    """Title of an 'hf' teacher's map from its store record (`VLMTeacher.metadata`: family, checkpoint)."""
    family, checkpoint = record.get("family"), record.get("checkpoint")
    if family is None:
        return "C_VLM (teacher: a Hugging Face VLM,\nits family not recorded)"
    model = Path(str(checkpoint)).name if checkpoint else "checkpoint not recorded"
    if family == LLAVA_15:
        return f"C_VLM (teacher: LLaVA-1.5,\n{model})"
    return f"C_VLM (teacher: {family}, {model},\nnot LLaVA-1.5)"


def thumbnail(image: torch.Tensor, side: int = DISPLAY_SIDE) -> torch.Tensor:
    """uint8 (3, H, W) shrunk (aspect kept) so its longer side is at most `side`, for drawing only."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    return image if scale >= 1 else TF.resize(image, [round(h * scale), round(w * scale)], antialias=True)


def infer_label(path: str | Path, classes: Sequence[str]) -> str | None:
    """The nearest folder of `path` whose name is one of `classes` (e.g. ``.../dog/images/x.jpg`` -> dog),
    or None."""
    known = set(classes)
    return next((part for part in reversed(Path(path).parent.parts) if part in known), None)


def check_outputs(
    out: str | Path | None, html: str | Path | None, labels: Sequence[str] | None, n: int
) -> None:
    """Refuse a `run_viz` request that writes nothing or gives labels for another number of images (before
    any map is computed)."""
    if out is None and html is None:
        raise ValueError("nothing to write: give --out (figure) and/or --html (page folder)")
    if labels is not None and len(labels) != n:
        raise ValueError(f"--labels: {len(labels)} labels for {n} images; give one per image")


def run_viz(
    maps: RunMaps,
    out: str | Path | None,
    layer: int | None = None,
    head: int | None = None,
    per: str = "mean",
    dpi: int = 150,
    html: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Draw Fig. 5 from a run's maps over its images (`lfi.evaluate.maps.run_maps`; with `head` or per 'head'
    made with ``per_head=True``); returns the files written (PNG and PDF, then html's index.html).

    per: 'mean' (one figure, a row per image, `layer` / `head` or the mean over them), 'layer' or 'head' (a
    row per layer / per head of `layer`, one figure per image, named <out>_<image stem>).
    html: a folder for the browsable page (`lfi.show.html`; maps: `layer` / `head` or the mean over them);
    labels: the true class of each image for the page (default: from its path, `infer_label`).
    out: None writes no figure (then `html` is needed).
    """
    check_outputs(out, html, labels, len(maps.paths))
    if (per == "head" or head is not None) and maps.heads is None:
        raise ValueError("per-head figures need the maps of each head: run_maps(..., per_head=True)")
    cfg, names = maps.run.cfg, maps.names
    title_vlm = vlm_title(maps.teacher, maps.vlm_record)  # a store's maps: the teacher it recorded
    # a chosen head, or a row per head, reads each head's own map; otherwise the trained (head-averaged) one
    figure_maps = maps.heads if per == "head" or (per == "mean" and head is not None) else maps.maps
    per_image = _per_image(figure_maps, maps.vlm, title_vlm)
    title = f"{maps.run_dir.name}: {cfg.model.name}, variant {cfg.model.variant}"
    images = [thumbnail(im) for im in maps.images]  # the maps cover the whole image, so they fit any size
    written: list[Path] = []
    if out is not None and per == "mean":
        fig = interaction_grid(images, per_image, labels=names, layer=layer, head=head, title=title)
        written += save_figure(fig, out, dpi=dpi)
    elif out is not None:
        for image, named, name in zip(images, per_image, names, strict=True):
            fig = interaction_figure(image, named, per=per, layer=-1 if layer is None else layer, title=title)
            written += save_figure(
                fig, Path(out).with_name(f"{Path(out).stem}_{Path(name).stem}.png"), dpi=dpi
            )
    if html is not None:
        classes = list(maps.run.metrics.get("classes") or [])
        truth = list(labels) if labels is not None else [infer_label(p, classes) for p in maps.paths]
        shown = _per_image(maps.heads if head is not None else maps.maps, maps.vlm, title_vlm)
        written.append(
            _write_html(html, images, shown, names, maps.logits, classes, truth, layer, head, title)
        )
    return written


def _per_image(
    maps: dict[str, torch.Tensor], vlm: Sequence[torch.Tensor] | None, vlm_name: str
) -> list[dict[str, torch.Tensor]]:
    """{title: (B, ...) maps} and C_VLM -> one {title: map} per image, in the column order of Fig. 5."""
    per_image = []
    for i in range(len(maps["C_VFM"])):
        named = {"C_VFM": maps["C_VFM"][i]}
        if vlm is not None:
            named[vlm_name] = vlm[i]
        named.update({k: v[i] for k, v in maps.items() if k != "C_VFM"})
        per_image.append(named)
    return per_image


def _write_html(
    html: str | Path,
    images: Sequence[torch.Tensor],
    per_image: Sequence[dict[str, torch.Tensor]],
    names: Sequence[str],
    logits: torch.Tensor,
    classes: Sequence[str],
    truth: Sequence[str | None],
    layer: int | None,
    head: int | None,
    title: str,
) -> Path:
    from lfi.show.html import Card, write_page
    from lfi.show.maps import select_map

    probs = logits.softmax(-1)
    cards = []
    for i, (image, named, name) in enumerate(zip(images, per_image, names, strict=True)):
        p, k = probs[i].max(0)
        predicted = classes[int(k)] if int(k) < len(classes) else f"class {int(k)}"
        shown = {t.replace("\n", " "): select_map(m, layer, head, t) for t, m in named.items()}
        cards.append(Card(name, image, shown, predicted, float(p), truth[i]))
    where = "mean over layers" if layer is None else f"layer {layer}"
    where += ", mean over heads" if head is None else f", head {head}"
    return write_page(cards, html, title=f"{title} ({where})")
