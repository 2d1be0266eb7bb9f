"""Rebuild the figures of docs/figures from real data (run from the repository root):

    PYTHONPATH=. python docs/figures/make_figures.py ../shared/data [--fig5-only] [--out DIR]

Fig. 5: the real DeiT-Tiny converted to I-ViT (untrained conversion) saved as a run folder, `lfi viz` over three
OSIE stimuli with C_VLM from the ViT teacher. Fig. 6: `lfi eval-human` on the first 16 OSIE stimuli. Both run
through `lfi.cli.main`, exactly as the commands in docs/figures/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from lfi.cli import main as lfi
from lfi.config import load_config, save_config
from lfi.data.source import open_source
from lfi.show.save import to_palette
from lfi.train.build import build_model

OUT = Path(__file__).resolve().parent
OSIE_IMAGES = ("1001.jpg", "1002.jpg", "1005.jpg")


def _run(argv: list[str]) -> None:
    """One `lfi` command in-process; stops on its exit status (the error was printed on one line)."""
    status = lfi(argv)
    if status:
        raise SystemExit(f"lfi {' '.join(argv)}: exit status {status}")


def _palette(png: Path) -> None:
    """Re-save a PNG with a 256-colour palette (`to_palette`) and drop its PDF: docs keep small PNGs."""
    to_palette(png)
    png.with_suffix(".pdf").unlink()


def untrained_run(data: Path, root: Path) -> Path:
    """The shared DeiT-Tiny converted to I-ViT (variant iq_ic_gc, not trained), saved as a run folder that
    `lfi viz` reads like any trained run: config.yaml, model.safetensors and metrics.json with its classes
    (the ImageNet-1k head is kept: the converted model is the DeiT itself)."""
    weights = data / "weights" / "deit_tiny_patch16_224.safetensors"
    cfg = load_config(None, [
        "experiment=deit_tiny_untrained_ivit", f"output_dir={root}", "model.name=deit_tiny_patch16_224",
        f"model.checkpoint={weights}", "model.variant=iq_ic_gc", "teacher.name=vit", "teacher.store=unused",
    ])  # fmt: skip
    cfg.run_dir.mkdir(parents=True)
    save_config(cfg, cfg.run_dir / "config.yaml")
    synsets = (data / "weights" / "imagenet_synset_words.txt").read_text().splitlines()
    classes = [line.split(" ", 1)[-1] for line in synsets if line.strip()]
    model = build_model(cfg, len(classes))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(cfg.run_dir / "model.safetensors")
    )
    (cfg.run_dir / "metrics.json").write_text(json.dumps({"task": cfg.task, "classes": classes}))
    return cfg.run_dir


def main(data: Path, fig5_only: bool = False, out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = data / "weights" / "deit_tiny_patch16_224.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = untrained_run(data, tmp / "runs")
        source = open_source(data, "osie", "osie*.zip", "data/eye/fixations.mat")
        images = []
        for name in OSIE_IMAGES:
            (tmp / name).write_bytes(source.read(f"data/stimuli/{name}"))
            images.append(str(tmp / name))
        fig5 = out / "fig5_interaction_maps.png"
        _run(["viz", str(run), "--images", *images, "--teacher", "vit", "--dpi", "110", "--out", str(fig5)])
    _palette(fig5)
    if not fig5_only:
        _run(["eval-human", "--model", "deit_tiny", "--checkpoint", str(weights), "--data", str(data),
              "--limit", "16", "--out", str(out / "human")])  # fmt: skip
        (out / "human" / "human_alignment.pdf").unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Rebuild the figures of docs/figures from real data.")
    parser.add_argument(
        "data", nargs="?", type=Path, default=Path("../shared/data"), help="the shared data folder"
    )
    parser.add_argument("--fig5-only", action="store_true", help="only Fig. 5 (lfi viz), not Fig. 6")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args()
    main(args.data, args.fig5_only, args.out)
