"""A trained I-ViT's interaction maps over chosen images (paper Fig. 5); `lfi viz` (`lfi.cli.show`) runs `run_viz`.

The student is rebuilt from the run folder (`lfi.train.runs.load_model`) and run once over the images
with a `MapRequest` for the class-token rows of C_VFM, C_AGT and C_F (only C_VFM for a plain ViT). C_VLM, the
teacher's map, comes from the run's interaction store when the image is in it (matched by the hash of the
file's bytes, the second part of every store key), or from a teacher named with ``--teacher vit|oracle``;
an image missing from the store without ``--teacher`` is an error, never silently skipped.

Images are resized whole (no crop) to the model's input size, so every map covers the whole image, as the
overlays of `lfi.show.maps` need.

With ``html`` (``lfi viz --html OUT_DIR``) the same maps go into a browsable page (`lfi.show.html`): per image
the image, C_VLM, C_VFM, C_AGT, C_F, the prediction (top class of the run's classes and its probability) and
the true label: given (``labels``), or else the nearest folder of the image's path named like one of the
run's classes (ImageFolder layouts), or else unknown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from lfi.data.base import decode_rgb
from lfi.data.pipelines import IMAGENET_MEAN, IMAGENET_STD
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.maps import attention_to_grid
from lfi.models import InteractionViT, MapRequest
from lfi.show.maps import interaction_figure, interaction_grid
from lfi.show.save import save_figure
from lfi.train.runs import Run, load_model, load_run

#: Figure names of the student's maps, in the order of the paper's Fig. 5 (C_VLM goes after C_VFM).
MAP_TITLES = {"vfm": "C_VFM", "agt": "C_AGT", "fused": "C_F"}
DISPLAY_SIDE = 320  # longest side of the images drawn: panels are ~2 inches, and full-size photos bloat files


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
    from lfi.extract.vlm.families.llava import FAMILY as LLAVA_15  # imports transformers: only when needed

    family, checkpoint = record.get("family"), record.get("checkpoint")
    if family is None:
        return "C_VLM (teacher: a Hugging Face VLM,\nits family not recorded)"
    model = Path(str(checkpoint)).name if checkpoint else "checkpoint not recorded"
    if family == LLAVA_15.name:
        return f"C_VLM (teacher: LLaVA-1.5,\n{model})"
    return f"C_VLM (teacher: {family}, {model},\nnot LLaVA-1.5)"


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[InteractionViT, Run]:
    """The trained I-ViT of a classification run folder, in eval mode, and the run (its config in `run.cfg`)."""
    run = load_run(run_dir)
    if run.cfg.task != "classification":
        raise ValueError(
            f"{run.files.config}: task {run.cfg.task!r}; interaction-map figures need a classification run (I-ViT)"
        )
    return load_model(run, device=device), run


def read_image(path: str | Path) -> tuple[torch.Tensor, bytes]:
    """An image file as uint8 (3, H, W) RGB and its raw bytes (the bytes key it in an interaction store)."""
    data = Path(path).read_bytes()
    return decode_rgb(data, str(path)).as_subclass(torch.Tensor), data


def model_input(
    images: Sequence[torch.Tensor],
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (3, H, W) images -> normalised float (B, 3, *size), each resized whole (no crop)."""
    batch = [
        TF.resize(TF.to_dtype(im, torch.float32, scale=True), list(size), antialias=True) for im in images
    ]
    return TF.normalize(torch.stack(batch), list(mean), list(std))


@torch.no_grad()
def student_maps(
    model: InteractionViT, x: torch.Tensor, layers: Sequence[int] | None = None, per_head: bool = False
) -> dict[str, torch.Tensor]:
    """One forward pass -> {"C_VFM", ["C_AGT", "C_F"]: (B, layers, gh, gw)} class-token maps, each the map
    that was trained (`lfi.maps.attention_to_grid`: heads averaged, prefix dropped, renormalised).

    layers: the converted blocks to read (default: all of them); a plain ViT variant has only C_VFM.
    per_head: each head's own map instead, (B, layers, heads, gh, gw) (their mean is not the trained map).
    """
    return student_outputs(model, x, layers, per_head)[0]


@torch.no_grad()
def student_outputs(
    model: InteractionViT, x: torch.Tensor, layers: Sequence[int] | None = None, per_head: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`student_maps` and the logits (B, classes) of the same forward pass."""
    names = ("vfm", "agt", "fused") if model.config.interaction_queries else ("vfm",)
    # without a class token the full maps come back and, as in training, their patch rows are averaged
    rows = 1 if model.has_class_token else None
    out = model(x, MapRequest.of(*names, rows=rows), layers=tuple(layers) if layers is not None else None)
    grid = model.patch_grid(tuple(x.shape[-2:]))
    maps = {}
    for n in names:
        stacked = torch.stack([m[n] for m in out.maps.values()], dim=1)  # (B, layers, heads, R, N)
        if per_head:  # a head axis of one under each head: attention_to_grid then averages nothing
            stacked = stacked.unsqueeze(-3)
        maps[MAP_TITLES[n]] = attention_to_grid(stacked, model.num_prefix_tokens, grid).cpu()
    return maps, out.logits.float().cpu()


def thumbnail(image: torch.Tensor, side: int = DISPLAY_SIDE) -> torch.Tensor:
    """uint8 (3, H, W) shrunk (aspect kept) so its longer side is at most `side`, for drawing only."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    return image if scale >= 1 else TF.resize(image, [round(h * scale), round(w * scale)], antialias=True)


def hash_suffix(data: bytes) -> str:
    """The part of a store key that identifies an image's bytes (`lfi.data.keys.image_key`)."""
    return "#" + hashlib.sha256(data).hexdigest()[:12]


def store_maps(store: Any, datas: Sequence[bytes], names: Sequence[str]) -> list[torch.Tensor]:
    """C_VLM of each image from an `InteractionStore`, found by the hash of its bytes.

    Raises naming the images that are not in the store, or whose stored map is invalid (no foreground)."""
    by_hash = {k[k.rindex("#") :]: k for k in store.keys() if "#" in k}  # noqa: SIM118 (no __iter__)
    keys = [by_hash.get(hash_suffix(d)) for d in datas]
    missing = [n for n, k in zip(names, keys, strict=True) if k is None]
    if missing:
        raise KeyError(
            f"not in the interaction store {store.root}: {missing}; pass --teacher vit|oracle to compute "
            "C_VLM for them, or --teacher none to leave it out"
        )
    records = [store[k] for k in keys]
    invalid = [n for n, r in zip(names, records, strict=True) if not r.valid]
    if invalid:
        raise ValueError(f"the store holds no valid C_VLM (teacher saw no foreground) for {invalid}")
    return [r.map for r in records]


def teacher_maps(
    teacher: str,
    images: Sequence[torch.Tensor],
    names: Sequence[str],
    boxes: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """C_VLM (B, h, w) from a teacher run now: 'vit' (DeiT-Tiny relevance of its own top-1 class, as the
    images carry no label) or 'oracle' (needs one box tensor (K, 4) XYXY pixels per image)."""
    if teacher == "oracle" and boxes is None:
        raise ValueError("--teacher oracle needs --boxes: one 'x0,y0,x1,y1' per image")
    samples = [{"image": im, "relpath": n} for im, n in zip(images, names, strict=True)]
    if boxes is not None:
        for s, b in zip(samples, boxes, strict=True):
            s["boxes"] = b
    out = build_teacher(teacher)(samples)
    return apply_contrast(out.fore, out.back, "skip", list(names)).maps


def parse_box(text: str) -> torch.Tensor:
    """'x0,y0,x1,y1' -> (1, 4) float tensor."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise ValueError(f"a box is 'x0,y0,x1,y1', got {text!r}")
    return torch.tensor([values])


def infer_label(path: str | Path, classes: Sequence[str]) -> str | None:
    """The nearest folder of `path` whose name is one of `classes` (e.g. ``.../dog/images/x.jpg`` -> dog),
    or None."""
    known = set(classes)
    return next((part for part in reversed(Path(path).parent.parts) if part in known), None)


def run_viz(
    run_dir: str | Path,
    image_paths: Sequence[str | Path],
    out: str | Path | None,
    teacher: str | None = None,
    boxes: Sequence[torch.Tensor] | None = None,
    layer: int | None = None,
    head: int | None = None,
    per: str = "mean",
    dpi: int = 150,
    html: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Draw Fig. 5 for `image_paths` with the run's student; returns the files written (PNG and PDF, then
    html's index.html).

    teacher: None = C_VLM from the run's store, 'vit' / 'oracle' = computed now, 'none' = no C_VLM column.
    per: 'mean' (one figure, a row per image, `layer` / `head` or the mean over them), 'layer' or 'head' (a
    row per layer / per head of `layer`, one figure per image, named <out>_<image stem>).
    html: a folder for the browsable page (`lfi.show.html`; maps: `layer` / `head` or the mean over them);
    labels: the true class of each image for the page (default: from its path, `infer_label`).
    out: None writes no figure (then `html` is needed).
    """
    if out is None and html is None:
        raise ValueError("nothing to write: give --out (figure) and/or --html (page folder)")
    if labels is not None and len(labels) != len(image_paths):
        raise ValueError(f"--labels: {len(labels)} labels for {len(image_paths)} images; give one per image")
    model, run = load_trained(run_dir)
    cfg = run.cfg
    loaded = [read_image(p) for p in image_paths]
    images, datas = [im for im, _ in loaded], [d for _, d in loaded]
    names = [Path(p).name for p in image_paths]
    size = (cfg.data.img_size, cfg.data.img_size)
    x = model_input(images, size)
    maps, logits = student_outputs(model, x)
    # a chosen head, or a row per head, reads each head's own map; otherwise the trained (head-averaged) one
    heads = student_maps(model, x, per_head=True) if per == "head" or head is not None else None
    vlm, record = _vlm_maps(run_dir, cfg.teacher.store, teacher, images, datas, names, boxes)
    title_vlm = vlm_title(teacher or record["teacher"], record)  # a store's maps: the teacher it recorded
    figure_maps = heads if per == "head" or (per == "mean" and head is not None) else maps
    per_image = _per_image(figure_maps, vlm, title_vlm)
    title = f"{Path(run_dir).name}: {cfg.model.name}, variant {cfg.model.variant}"
    images = [thumbnail(im) for im in images]  # the maps cover the whole image, so they fit any size
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
        classes = list(run.metrics.get("classes") or [])
        truth = list(labels) if labels is not None else [infer_label(p, classes) for p in image_paths]
        shown = _per_image(heads if head is not None else maps, vlm, title_vlm)
        written.append(_write_html(html, images, shown, names, logits, classes, truth, layer, head, title))
    return written


def _vlm_maps(
    run_dir: str | Path,
    store: str | Path | None,
    teacher: str | None,
    images: Sequence[torch.Tensor],
    datas: Sequence[bytes],
    names: Sequence[str],
    boxes: Sequence[torch.Tensor] | None,
) -> tuple[list[torch.Tensor] | None, dict[str, Any]]:
    """C_VLM (h, w) of each image for `run_viz`: from the run's store (teacher None), computed now, or None;
    and the store's metadata (empty when computed now)."""
    if teacher is None:
        if store is None:
            raise ValueError(f"{run_dir}: the run has no interaction store; pass --teacher vit|oracle|none")
        from lfi.store.layout import metadata_path
        from lfi.store.shards import InteractionStore

        opened = InteractionStore(store)
        if "teacher" not in opened.metadata:
            raise ValueError(f"{metadata_path(store)}: no 'teacher' field, so the maps' teacher is unknown")
        return store_maps(opened, datas, names), opened.metadata
    return (None if teacher == "none" else list(teacher_maps(teacher, images, names, boxes))), {}


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
