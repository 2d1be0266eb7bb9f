"""`lfi demo`: the whole pipeline in minutes on a CPU, offline: data -> teacher maps -> ViT vs I-ViT -> report.

Without --data: a synthetic set with a background shortcut (`lfi.demo.synthetic`), maps from the oracle
teacher (ground-truth boxes), evaluated in distribution (background goes with the class) and out of it
(background independent of the class). With --data <shared data root>: PACS photos (a stratified part of
the photo domain's train split) with maps from the offline ViT teacher (DeiT-Tiny relevance, a VFM->VFM
substitute for the paper's LLaVA-1.5), evaluated on held-out photos (ID) and on the art, cartoon and sketch
domains (OOD). Both students are the same tiny random-init ViT trained with the same budget; the I-ViT adds
interaction queries, the gate and L_align (freeze_backbone=False: a random backbone must learn).

Output folder: store/ (the interaction store), vit/ and ivit/ (run folders of `lfi train`), maps.png/.pdf,
report.json and report.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset
from torchvision.transforms import v2

from lfi.config import config_from_dict
from lfi.data.pipelines import IMAGENET_MEAN, IMAGENET_STD
from lfi.extract.run import extract
from lfi.extract.store import InteractionStore
from lfi.extract.teacher import Teacher, build_teacher
from lfi.maps import attention_to_grid
from lfi.models import MapRequest
from lfi.train.data import ExperimentData
from lfi.train.engine import LfiModule, train

SIZES = {  # images per split and epochs; "quick" is for tests
    "full": {"train": 1600, "val": 400, "test": 800, "epochs": 20},
    "quick": {"train": 96, "val": 32, "test": 32, "epochs": 1},
}


@dataclass
class DemoData:
    """Datasets of the demo, the teacher that writes their maps and how to describe them in the report."""

    data: ExperimentData
    teacher: Teacher
    teacher_label: str
    dataset_label: str
    img_size: int


def synthetic_data(size: str, seed: int) -> DemoData:
    from lfi.demo.synthetic import ShortcutShapes
    from lfi.extract.oracle import OracleTeacher

    n = SIZES[size]
    train_ds = ShortcutShapes("train", n["train"], seed=seed)
    val = ShortcutShapes("val", n["val"], seed=seed)
    tests = {
        "id": ShortcutShapes("id", n["test"], seed=seed),
        "ood": ShortcutShapes("ood", n["test"], seed=seed),
    }
    data = ExperimentData(train_ds, val, tests, train_ds.classes)
    label = "synthetic shapes, background shortcut (train/ID: background matches class 95%; OOD: independent)"
    return DemoData(data, OracleTeacher(grid=(12, 12)), "oracle (ground-truth boxes)", label, 48)


def pacs_data(root: Path, size: str, seed: int) -> DemoData:
    from lfi.data.pacs import PACS
    from lfi.data.subsets import ratio_subset

    photo = PACS(root, ["photo"], "train")
    keep = ratio_subset(photo.labels, 0.05 if size == "quick" else 0.5, seed)
    val = PACS(root, ["photo"], "val")
    tests = {
        "id (photo)": val,
        **{f"ood ({d})": PACS(root, [d], "test") for d in ("art_painting", "cartoon", "sketch")},
    }
    if size == "quick":
        tests = {k: Subset(v, list(range(0, len(v), max(1, len(v) // 32)))) for k, v in tests.items()}
        val = tests["id (photo)"]
    data = ExperimentData(Subset(photo, keep), val, tests, photo.classes)
    teacher = build_teacher("vit")
    label = "PACS: train on photos, test on held-out photos (ID) and art/cartoon/sketch (OOD)"
    return DemoData(
        data, teacher, "vit (DeiT-Tiny relevance; offline substitute, not the paper's LLaVA-1.5)", label, 64
    )


def demo_config(
    name: str, variant: str, out: Path, teacher: str, store: Path, img: int, epochs: int, seed: int
):
    """The shared student recipe: a tiny ViT (depth 4, patch 8), AdamW + cosine, same budget for both."""
    return config_from_dict({
        "experiment": name, "output_dir": str(out), "seed": seed,
        "paper_row": "demo (not a paper row)",
        # the plain ViT reads no maps, and a run records the teacher it used
        "teacher": {"name": teacher, "store": str(store)} if variant != "vit" else {"name": "none"},
        "model": {"name": "vit_tiny_patch16_224", "variant": variant, "freeze_backbone": False,
                  "timm_kwargs": {"img_size": img, "patch_size": 8, "depth": 4, "embed_dim": 64,
                                                 "num_heads": 2}},
        "loss": {"align_weight": 1.0},
        "data": {"dataset": "synthetic", "img_size": img, "batch_size": 64, "num_workers": 1},
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1.0},
        "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1, "deterministic": True,
                    "log_every_n_steps": 5, "log_maps_every_n_epochs": 0},
    }, f"lfi demo ({name})")  # fmt: skip


def transforms(img: int, train: bool) -> v2.Transform:
    """Resize to the student's input, flip in training (the map moves with the image), normalise."""
    geometry = [v2.Resize((img, img), antialias=True)] + ([v2.RandomHorizontalFlip()] if train else [])
    return v2.Compose(
        [*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


@torch.no_grad()
def figure_maps(demo: DemoData, ivit: LfiModule, vit: LfiModule, path: Path, n: int = 4) -> list[Path]:
    """Image, C_VLM (teacher), the I-ViT's C_AGT and C_VFM and the plain ViT's C_VFM (class-token rows, mean
    over heads, deepest aligned block) for the first n images of the last (OOD) test set."""
    from lfi.show.maps import interaction_grid
    from lfi.show.save import save_figure

    test = list(demo.data.tests.values())[-1]
    samples = [test[i] for i in range(min(n, len(test)))]
    teacher_maps = demo.teacher(samples)
    tf = transforms(demo.img_size, train=False)
    x = torch.stack([tf(dict(s))["image"].as_subclass(torch.Tensor) for s in samples])
    layer = ivit.model.align_layers[-1]
    grid = ivit.model.patch_grid(tuple(x.shape[-2:]))

    def rows(module: LfiModule, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        module.eval()
        out = module.model(x, MapRequest.of(*names, rows=1), layers=(layer,))
        return {k: attention_to_grid(out.maps[layer][k], module.model.num_prefix_tokens, grid) for k in names}

    iv, pv = rows(ivit, ("agt", "vfm")), rows(vit, ("vfm",))
    maps = [
        {"C_VLM (teacher)": (teacher_maps.fore[i] - teacher_maps.back[i]).clamp_min(0), "I-ViT C_AGT": iv["agt"][i],
         "I-ViT C_VFM": iv["vfm"][i], "ViT C_VFM": pv["vfm"][i]}
        for i in range(len(samples))
    ]  # fmt: skip
    labels = [f"{demo.data.classes[s['label']]}" for s in samples]
    fig = interaction_grid(
        [s["image"] for s in samples],
        maps,
        labels=labels,
        title=f"class-token interaction maps, block {layer}, OOD test images",
    )
    return save_figure(fig, path)


def accuracy_table(results: dict[str, dict[str, Any]]) -> list[str]:
    names = list(next(iter(results.values()))["test"])
    sets = [k for k in names if isinstance(results[next(iter(results))]["test"][k], dict)]
    lines = [
        "| model | " + " | ".join(f"{s} top-1 (%)" for s in sets) + " | train time (s) |",
        "| --- |" + " --- |" * (len(sets) + 1),
    ]
    for model, m in results.items():
        accs = " | ".join(f"{m['test'][s]['acc1']:.1f}" for s in sets)
        lines.append(f"| {model} | {accs} | {m['train_seconds']:.0f} |")
    return lines


def run_demo(out: Path, data_root: Path | None = None, size: str = "full", seed: int = 0) -> dict[str, Any]:
    """Run the demo into `out`; returns the report dict (also written as report.json / report.md)."""
    if size not in SIZES:
        raise ValueError(f"demo size must be one of {sorted(SIZES)}, got {size!r}")
    start = time.perf_counter()
    # One compute thread: the matrices of this tiny ViT are too small to gain from a second one, which is
    # left to the data-loading worker (a busy machine also makes idle OpenMP threads spin and stall).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(out, data_root, size, seed, start)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, data_root: Path | None, size: str, seed: int, start: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    demo = pacs_data(data_root, size, seed) if data_root is not None else synthetic_data(size, seed)
    timings: dict[str, float] = {"data_s": time.perf_counter() - start}

    t = time.perf_counter()
    store_dir = out / "store"
    report = extract(
        demo.teacher,
        demo.data.train,
        store_dir,
        batch_size=64,
        progress=False,
        metadata={"dataset": demo.dataset_label},
    )
    store = InteractionStore(store_dir, expect={"teacher": demo.teacher.name})
    timings["extract_s"] = time.perf_counter() - t

    epochs = SIZES[size]["epochs"]
    results, modules = {}, {}
    for name, variant in (("vit", "vit"), ("ivit", "iq_ic_gc")):
        cfg = demo_config(name, variant, out, demo.teacher.name, store_dir, demo.img_size, epochs, seed)
        t = time.perf_counter()
        run = train(
            cfg,
            demo.data,
            store,
            train_transforms=transforms(demo.img_size, True),
            eval_transforms=transforms(demo.img_size, False),
        )
        timings[f"{name}_s"] = time.perf_counter() - t
        results[name], modules[name] = run.metrics, run.module

    t = time.perf_counter()
    figure = figure_maps(demo, modules["ivit"], modules["vit"], out / "maps")
    timings["figure_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "dataset": demo.dataset_label,
        "teacher": demo.teacher_label,
        "student": "ViT (depth 4, width 64, 2 heads, patch 8, random init), same budget for both models",
        "epochs": epochs,
        "extraction": report.summary(),
        "models": {k: {"test": v["test"], "best_val_acc1": v["best_val"]} for k, v in results.items()},
        "figure": [str(p) for p in figure],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(summary, results))
    return summary


def report_markdown(summary: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# lfi demo: ViT vs I-ViT",
        "",
        f"- data: {summary['dataset']}",
        f"- teacher (C_VLM): {summary['teacher']}",
        f"- students: {summary['student']}, {summary['epochs']} epochs",
        f"- extraction: {summary['extraction'].splitlines()[0]}",
        "",
        *accuracy_table({"ViT": results["vit"], "I-ViT": results["ivit"]}),
        "",
        "![maps](maps.png)",
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()),
        "",
        "One seed, one run each: differences of a few points are within run-to-run noise.",
        "",
    ]
    return "\n".join(lines)
