"""Rebuild the figures of docs/figures from real data (run from the repository root):

    PYTHONPATH=. python docs/figures/make_figures.py ../shared/data

Fig. 5: the real DeiT-Tiny converted to I-ViT (untrained conversion) saved as a run folder, `lfi viz` over three
OSIE stimuli with C_VLM from the ViT teacher. Fig. 6: `lfi eval-human` on the first 16 OSIE stimuli.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image
from safetensors.torch import save_file

from lfi.data.source import open_source
from lfi.evaluate import human_cli
from lfi.show import viz
from lfi.train.config import load_config, save_config
from lfi.train.module import build_student

OUT = Path(__file__).resolve().parent
OSIE_IMAGES = ("1001.jpg", "1002.jpg", "1005.jpg")


def _cli(module, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="lfi")
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.func(args)


def _palette(png: Path) -> None:
    """Re-save a PNG with a 256-colour palette (about 5x smaller) and drop its PDF: docs keep small PNGs."""
    Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
    png.with_suffix(".pdf").unlink()


def main(data: Path, fig5_only: bool = False) -> None:
    weights = data / "weights" / "deit_tiny_patch16_224.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(None, [
            "experiment=deit_tiny_untrained_ivit", f"output_dir={tmp}", "model.name=deit_tiny_patch16_224",
            f"model.checkpoint={weights}", "model.variant=iq_ic_gc", "teacher.name=vit", "teacher.store=unused",
        ])  # fmt: skip
        cfg.run_dir.mkdir(parents=True)
        save_config(cfg, cfg.run_dir / "config.yaml")
        model = build_student(cfg, 1000)  # ImageNet-1k head kept: the converted model is the DeiT itself
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, str(cfg.run_dir / "model.safetensors")
        )
        source = open_source(data, "osie", "osie*.zip", "data/eye/fixations.mat")
        images = []
        for name in OSIE_IMAGES:
            (tmp / name).write_bytes(source.read(f"data/stimuli/{name}"))
            images.append(str(tmp / name))
        _cli(
            viz,
            [
                "viz",
                str(cfg.run_dir),
                "--images",
                *images,
                "--teacher",
                "vit",
                "--dpi",
                "110",
                "--out",
                str(OUT / "fig5_interaction_maps.png"),
            ],
        )
    _palette(OUT / "fig5_interaction_maps.png")
    if not fig5_only:
        _cli(human_cli, ["eval-human", "--model", "deit_tiny", "--checkpoint", str(weights), "--data", str(data),
                         "--limit", "16", "--out", str(OUT / "human")])  # fmt: skip
        (OUT / "human" / "human_alignment.pdf").unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
