"""A trained I-ViT's interaction maps over image files, and the teacher's C_VLM for them: what `lfi viz`
(`lfi.show.viz`) draws, and the student side of `lfi eval-human` (`lfi.evaluate.human`).

The student is rebuilt from the run folder (`lfi.train.runs.load_model`) and run once over the images
with a `MapRequest` for the class-token rows of C_VFM, C_AGT and C_F (only C_VFM for a plain ViT), each turned
into the map that was trained (`lfi.maps.attention_to_grid`). C_VLM comes from the run's interaction store
when the image is in it (matched by the hash of the file's bytes, the second part of every store key), or
from a teacher run here (``vit`` or ``oracle``); an image missing from the store without a teacher is an
error, never silently skipped.

Images are resized whole (no crop) to the model's input size, so every map covers the whole image, as the
overlays of `lfi.show.maps` and the human maps of OSIE need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from lfi.data.base import decode_rgb
from lfi.data.pipelines import IMAGENET_MEAN, IMAGENET_STD
from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.maps import attention_to_grid
from lfi.models import InteractionViT, MapRequest
from lfi.train.runs import Run, load_model, load_run

#: Names of the student's maps, in the order of the paper's Fig. 5 (C_VLM goes after C_VFM).
MAP_TITLES = {"vfm": "C_VFM", "agt": "C_AGT", "fused": "C_F"}


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


@dataclass
class RunMaps:
    """A run's maps over image files: the images (uint8, whole), the student's trained maps {"C_VFM", ...:
    (B, layers, gh, gw)} and logits of one pass, each head's maps when asked for (B, layers, heads, gh, gw),
    and C_VLM per image (None: left out) with the teacher that made it."""

    run_dir: Path
    run: Run
    paths: list[Path]
    images: list[torch.Tensor]
    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    heads: dict[str, torch.Tensor] | None
    vlm: list[torch.Tensor] | None
    teacher: str
    vlm_record: dict[str, Any]  # the store's metadata where C_VLM was read from one (empty otherwise)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]


def run_maps(
    run_dir: str | Path,
    image_paths: Sequence[str | Path],
    teacher: str | None = None,
    boxes: Sequence[torch.Tensor] | None = None,
    per_head: bool = False,
) -> RunMaps:
    """The run's student over `image_paths` (`student_outputs`, and each head's maps with `per_head`) and
    C_VLM: teacher None = from the run's store, 'vit' / 'oracle' = computed now (`teacher_maps`), 'none' =
    left out."""
    model, run = load_trained(run_dir)
    paths = [Path(p) for p in image_paths]
    loaded = [read_image(p) for p in paths]
    images, datas = [im for im, _ in loaded], [d for _, d in loaded]
    names = [p.name for p in paths]
    x = model_input(images, (run.cfg.data.img_size,) * 2)
    maps, logits = student_outputs(model, x)
    heads = student_maps(model, x, per_head=True) if per_head else None
    vlm, record = _vlm_maps(run_dir, run.cfg.teacher.store, teacher, images, datas, names, boxes)
    teacher = teacher or record["teacher"]
    return RunMaps(Path(run_dir), run, paths, images, maps, logits, heads, vlm, teacher, record)


def _vlm_maps(
    run_dir: str | Path,
    store: str | Path | None,
    teacher: str | None,
    images: Sequence[torch.Tensor],
    datas: Sequence[bytes],
    names: Sequence[str],
    boxes: Sequence[torch.Tensor] | None,
) -> tuple[list[torch.Tensor] | None, dict[str, Any]]:
    """C_VLM (h, w) of each image for `run_maps`: from the run's store (teacher None), computed now, or None;
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
