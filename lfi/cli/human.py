"""`lfi eval-human`: human alignment of C_VFM / C_VLM / C_AGT on OSIE (paper Fig. 6)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_eval_human(args: argparse.Namespace) -> int:
    from lfi.evaluate.human import LAYER_METRICS, evaluate_human
    from lfi.metrics.human import METRICS
    from lfi.show.human_report import report_text, write_report

    evaluation = evaluate_human(
        args.data, args.run, args.model, args.checkpoint, args.limit, args.teacher, args.batch_size,
        store=args.store, resample=args.resample, eval_side=args.eval_side or None,
        layer_metrics=METRICS if args.layer_auc else LAYER_METRICS,
    )  # fmt: skip
    written = write_report(evaluation, args.out)
    print(report_text(evaluation))
    print("wrote " + ", ".join(map(str, written)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """``lfi eval-human --run RUN_DIR [RUN_DIR ...] [--run ...] | --model NAME --checkpoint PATH [--data ROOT] [--limit N]
    [--store STORE] --out DIR``."""
    p = subparsers.add_parser("eval-human", help="human alignment of C_VFM / C_VLM / C_AGT on OSIE (Fig. 6)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", type=Path, nargs="+", action="append",
        help="run folder(s) of `lfi train` (classification) making one row; several (e.g. seeds): mean ± std "
        "over them; repeat --run for more rows (ViT, I-ViT, controls), all scored in one pass",
    )  # fmt: skip
    source.add_argument("--model", help="timm model name (or deit_tiny, deit_small), converted to I-ViT")
    p.add_argument("--checkpoint", type=Path, help="safetensors weights for --model")
    p.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder holding osie/osie-dev.zip"
    )
    p.add_argument("--limit", type=int, default=100, help="first N OSIE stimuli (default 100)")
    p.add_argument("--teacher", choices=("vit", "none"), default="vit", help="C_VLM source (default vit)")
    p.add_argument(
        "--store", type=Path, help="interaction store holding the OSIE images: its maps as a reference row"
    )
    p.add_argument(
        "--resample", choices=("to_human", "to_model"), default="to_human",
        help="common grid: model maps upsampled to the human map (default) or the human map downsampled",
    )  # fmt: skip
    p.add_argument(
        "--eval-side", type=int, default=200,
        help="score on human maps of this longest side, fixations as votes per cell (default 200; 0 = full size)",
    )  # fmt: skip
    p.add_argument(
        "--layer-auc", action="store_true",
        help="score AUC-Judd per layer too (default: cosine, CC, NSS per layer; AUC-Judd for the layer-mean maps)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=cmd_eval_human)
