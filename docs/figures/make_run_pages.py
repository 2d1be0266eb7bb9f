"""Figure pages of trained runs (issue 19): one page per run, and a browsable HTML page per dataset.

    PYTHONPATH=. python docs/figures/make_run_pages.py DATA --out docs/figures/runs \
        --run tinyimagenet:ivit_vit=WORK/runs/study/tinyimagenet_students/ivit_vit/seed0 ... \
        --html tinyimagenet:ivit_vit pacs:ivit_vit

DATA holds tiny-imagenet-200/*.zip (the val zip) and/or pacs/PACS-*.zip, and weights/ for the `vit` teacher
($LFI_DATA/weights, see `lfi.extract.vit_teacher`). For each `--run DATASET:ROW=RUN_DIR` it draws Fig. 5 (`lfi
viz`: `lfi.evaluate.maps.run_maps`, drawn by `lfi.show.viz.run_viz`): the teacher's map beside the run's C_VFM,
C_AGT and C_F on test images the run never trained on, and writes `<dataset>_<row>.png` and `<dataset>_<row>.md`
(what the run is, its test top-1, the figure). The teacher column is the run's own teacher: the box oracle (from
the images' boxes) for an oracle run, else `vit` (DeiT-Tiny relevance). Neither is the paper's LLaVA-1.5. Images,
fixed and listed on the page: TinyImageNet val, the first image of every tenth class; PACS, the first images of
each class in the run's unseen (test) domain. `--html DATASET:ROW` also writes `html_<dataset>_<row>/index.html`
(`lfi viz --html`) over more images of the same kind.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lfi.data.base import ImageDataset
from lfi.show.save import to_palette
from lfi.train.runs import load_run

FIGURE_IMAGES = 6  # rows of the per-run figure
PAGE_IMAGES = {"tinyimagenet": 2, "pacs": 4}  # HTML page: images per chosen class


@dataclass
class Picked:
    """Images written to disk for `lfi viz`: their paths, true class names and boxes (XYXY pixels, or None)."""

    paths: list[Path]
    labels: list[str]
    boxes: list[torch.Tensor] | None


def pick(dataset: ImageDataset, per_class: int, class_step: int, folder: Path) -> Picked:
    """The first `per_class` images of every `class_step`-th class of `dataset`, written under `folder`."""
    chosen: dict[int, list[int]] = {}
    for i, record in enumerate(dataset.records):
        if record.label % class_step == 0 and len(chosen.setdefault(record.label, [])) < per_class:
            chosen[record.label].append(i)
    order = [i for label in sorted(chosen) for i in chosen[label]]
    paths, labels, boxes = [], [], []
    for i in order:
        record = dataset.records[i]
        label = dataset.classes[record.label]
        path = folder / f"{label.split(',')[0].replace(' ', '_')}_{Path(record.relpath).name}"
        path.write_bytes(dataset.source.read(record.relpath))
        paths.append(path)
        labels.append(label)
        boxes.append(torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4))
    has_boxes = all(len(b) for b in boxes)
    return Picked(paths, labels, boxes if has_boxes else None)


def test_images(dataset: str, run_dir: Path, data: Path, per_class: int, folder: Path) -> Picked:
    """The run's test images of `dataset`: TinyImageNet val (every tenth class) or the PACS unseen domain."""
    if dataset == "tinyimagenet":
        from lfi.data.tinyimagenet import TinyImageNet

        return pick(TinyImageNet(data, "val"), per_class, 10, folder)
    if dataset == "pacs":
        from lfi.data.pacs import PACS

        domains = load_run(run_dir).cfg.data.test_domains
        return pick(PACS(data, domains, "test"), per_class, 1, folder)
    raise ValueError(f"--run: dataset must be tinyimagenet or pacs, got {dataset!r}")


def teacher_of(run_dir: Path, picked: Picked) -> str:
    """The run's own teacher where it can be computed on new images: oracle (needs boxes), else vit."""
    return "oracle" if load_run(run_dir).cfg.teacher.name == "oracle" and picked.boxes is not None else "vit"


def describe(dataset: str, row: str, run_dir: Path, teacher: str, picked: Picked, figure: Path) -> str:
    run = load_run(run_dir)
    cfg, metrics = run.cfg, run.metrics
    tests = {name: scores.get("acc1") for name, scores in (metrics.get("test") or {}).items()}
    images = ", ".join(p.name for p in picked.paths)
    lines = [
        f"# {dataset} / {row}",
        "",
        f"Run `{run_dir}`: {cfg.model.name}, variant `{cfg.model.variant}`, "
        f"{'frozen backbone' if cfg.model.freeze_backbone else 'every weight trained'}, "
        f"trained with teacher `{cfg.teacher.name}` (control `{cfg.teacher.control}`), "
        f"lr {cfg.optim.lr:g}, align weight {cfg.loss.align_weight:g}, seed {cfg.seed}, {cfg.data.img_size} px.",
        "",
        f"Test top-1 of this run: {json.dumps(tests) if tests else 'not recorded'}.",
        "",
        f"Teacher column: `{teacher}` computed now on these images "
        f"({'their ground-truth boxes' if teacher == 'oracle' else 'DeiT-Tiny relevance of its own top-1 class'}), "
        "not the paper's LLaVA-1.5."
        + (
            f" The run was trained on `{cfg.teacher.control}` control maps instead of these."
            if cfg.teacher.control != "none"
            else ""
        )
        + " C_VFM / C_AGT / C_F: class-token maps, mean over layers and heads, each overlay scaled to its own "
        "maximum.",
        "",
        f"Images (test set, never trained on): {images}.",
        "",
        f"![{dataset} {row}]({figure.name})",
        "",
    ]
    return "\n".join(lines)


def run_pages(data: Path, out: Path, runs: Sequence[str], html: Sequence[str]) -> list[Path]:
    """Write the page of every `DATASET:ROW=RUN_DIR` and the HTML pages of `html` (DATASET:ROW); returns the
    pages (.md) and index.html files written."""
    from lfi.evaluate.maps import run_maps
    from lfi.show.viz import run_viz

    out.mkdir(parents=True, exist_ok=True)
    written = []
    parsed = [parse_run(spec) for spec in runs]
    unknown = set(html) - {f"{d}:{r}" for d, r, _ in parsed}
    if unknown:
        raise ValueError(f"--html {sorted(unknown)}: not among the --run rows")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, row, run_dir in parsed:
            key = f"{dataset}_{row}"
            folder = Path(tmp) / key
            folder.mkdir()
            per_class = PAGE_IMAGES[dataset] if f"{dataset}:{row}" in html else 1
            picked = test_images(dataset, run_dir, data, per_class, folder)
            teacher = teacher_of(run_dir, picked)
            figure_images = spread(picked, FIGURE_IMAGES)
            figure = out / f"{key}.png"
            maps = run_maps(run_dir, figure_images.paths, teacher, figure_images.boxes)
            for path in run_viz(maps, figure, dpi=80):
                if path.suffix == ".pdf":
                    path.unlink()  # the pages embed the PNG; a PDF of photographs is large
            to_palette(figure)
            page = out / f"{key}.md"
            page.write_text(describe(dataset, row, run_dir, teacher, figure_images, figure))
            written.append(page)
            if f"{dataset}:{row}" in html:
                maps = run_maps(run_dir, picked.paths, teacher, picked.boxes)
                written += run_viz(maps, None, html=out / f"html_{key}", labels=picked.labels)
                for png in (out / f"html_{key}").rglob("*.png"):
                    to_palette(png)
    return written


def spread(picked: Picked, n: int) -> Picked:
    """`n` of the picked images, evenly spread over them (so over the classes)."""
    step = max(1, len(picked.paths) // n)
    keep = list(range(0, len(picked.paths), step))[:n]
    boxes = [picked.boxes[i] for i in keep] if picked.boxes is not None else None
    return Picked([picked.paths[i] for i in keep], [picked.labels[i] for i in keep], boxes)


def parse_run(spec: str) -> tuple[str, str, Path]:
    """'DATASET:ROW=RUN_DIR' -> (dataset, row, run folder)."""
    key, sep, run_dir = spec.partition("=")
    dataset, colon, row = key.partition(":")
    if not sep or not colon or not row or not run_dir:
        raise ValueError(f"--run {spec!r}: expected DATASET:ROW=RUN_DIR")
    if not (Path(run_dir) / "model.safetensors").is_file():
        raise FileNotFoundError(f"--run {spec!r}: {run_dir}/model.safetensors not found (a finished run)")
    return dataset, row, Path(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="data root (tiny-imagenet-200/, pacs/)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures/runs"))
    parser.add_argument(
        "--run", nargs="+", action="append", required=True,
        help="DATASET:ROW=RUN_DIR (dataset: tinyimagenet, pacs); several per flag, or the flag repeated",
    )  # fmt: skip
    parser.add_argument(
        "--html", nargs="*", default=[], help="DATASET:ROW of the runs that also get an HTML page"
    )
    args = parser.parse_args()
    runs = [spec for group in args.run for spec in group]
    for path in run_pages(args.data, args.out, runs, args.html):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
