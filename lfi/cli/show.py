"""`lfi viz`, `lfi curves`, `lfi report`, `lfi params`: the show stage's commands (figures and tables)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lfi.catalog import teacher_names, teacher_spec


def cmd_viz(args: argparse.Namespace) -> int:
    from lfi.evaluate.maps import run_maps
    from lfi.show.viz import check_outputs, run_viz

    boxes = [parse_box(b) for b in args.boxes] if args.boxes else None
    if boxes is not None and len(boxes) != len(args.images):
        raise ValueError(f"--boxes: {len(boxes)} boxes for {len(args.images)} images; give one per image")
    check_outputs(args.out, args.html, args.labels, len(args.images))
    per_head = args.per == "head" or args.head is not None
    maps = run_maps(
        args.run, args.images, args.teacher, boxes, per_head
    )  # C_VLM: the store, or a teacher now
    written = run_viz(
        maps, args.out, args.layer, args.head, args.per, args.dpi, html=args.html, labels=args.labels
    )
    print("wrote " + ", ".join(map(str, written)))
    return 0


def parse_box(text: str) -> Any:
    """'x0,y0,x1,y1' -> (1, 4) float tensor (the oracle teacher's box of one image)."""
    import torch

    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise ValueError(f"a box is 'x0,y0,x1,y1', got {text!r}")
    return torch.tensor([values])


def cmd_curves(args: argparse.Namespace) -> int:
    from lfi.show.curves import convergence_figure, reach_lines, read_curves

    curves = read_curves(args.runs, args.column)
    convergence_figure(curves, args.threshold, ylabel=args.column or "validation metric", path=args.out)
    if args.threshold is not None:
        print("\n".join(reach_lines(curves, args.threshold)))
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.pdf')}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lfi.show.report import build_report

    build_report(args.runs, args.out, args.threshold)
    print(f"wrote {args.out}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from lfi.models.overhead import overhead

    for name in args.models:
        print(json.dumps(overhead(name, args.flops)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "viz",
        help="interaction maps of a trained run over images (Fig. 5), PNG + PDF and/or a browsable page",
    )
    p.add_argument("run", type=Path, help="run folder of `lfi train` (classification)")
    p.add_argument("--images", nargs="+", type=Path, required=True, help="image files")
    p.add_argument("--layer", type=int, help="block index into the converted blocks (default: mean)")
    p.add_argument("--head", type=int, help="head (default: mean over heads)")
    p.add_argument(
        "--per", choices=("mean", "layer", "head"), default="mean",
        help="mean: one row per image; layer / head: a figure per image, a row per layer / head",
    )  # fmt: skip
    p.add_argument(
        "--teacher", choices=[n for n in teacher_names() if teacher_spec(n).figures],
        help="C_VLM computed by this teacher (default: read from the run's interaction store)",
    )  # fmt: skip
    p.add_argument("--boxes", nargs="+", help="oracle teacher: one box 'x0,y0,x1,y1' (pixels) per image")
    p.add_argument("--dpi", type=int, default=150, help="PNG resolution (default 150)")
    p.add_argument("--out", type=Path, help="figure path; .png and .pdf are written")
    p.add_argument(
        "--html", type=Path, metavar="OUT_DIR",
        help="also (or instead of --out) write a browsable page: OUT_DIR/index.html + PNGs, offline, class filter",
    )  # fmt: skip
    p.add_argument(
        "--labels", nargs="+",
        help="--html: the true class of each image (default: a folder of its path named like a class)",
    )  # fmt: skip
    p.set_defaults(func=cmd_viz)

    p = subparsers.add_parser("curves", help="convergence plot (Fig. 3-4) of run folders' metrics.csv")
    p.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the baseline")
    p.add_argument(
        "--column", help="metrics.csv column (default: each run's validation metric, e.g. val/acc1)"
    )
    p.add_argument(
        "--threshold", type=float, help="value (the column's unit) whose epochs-to-reach are reported"
    )
    p.add_argument("--out", type=Path, required=True, help="figure path; .png and .pdf are written")
    p.set_defaults(func=cmd_curves)

    p = subparsers.add_parser("report", help="Markdown tables in the layout of the paper's Tables 1-7")
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (config.yaml + metrics.json)")
    p.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file (default report.md)")
    p.add_argument(
        "--threshold", type=float,
        help="validation value (val/acc1 in %%, val/mAP in [0, 1]) whose epochs-to-reach the figures mark",
    )  # fmt: skip
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "params", help="parameter (and FLOP) overhead of I-ViT over timm ViTs (Table 1)"
    )
    p.add_argument("models", nargs="+", help="timm model names, e.g. vit_small_patch16_224")
    p.add_argument("--flops", action="store_true", help="also count forward FLOPs (builds real weights)")
    p.set_defaults(func=cmd_params)
