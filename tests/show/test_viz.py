"""`lfi viz`: a tiny trained-run folder (config.yaml + model.safetensors + store) -> Fig. 5 PNG and PDF."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lfi.extract.store import Record, StoreWriter, image_key
from lfi.show.viz import load_trained, model_input, read_image, register, run_viz, student_maps
from lfi.train.config import load_config, save_config
from lfi.train.module import build_student

TINY = [
    "model.name=vit_tiny_patch16_224",
    "model.timm_kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 24, num_heads: 2}",
    "data.img_size=32",
    "data.dataset=synthetic",
]


def _image(path: Path, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A run folder of a 2-block I-ViT (4x4 patch grid, 5 classes) whose store holds the first image only."""
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    data = [_image(p, i) for i, p in enumerate(images)]
    store = tmp_path / "store"
    with StoreWriter(store, {"teacher": "oracle", "grid": [4, 4]}) as writer:
        m = torch.zeros(4, 4)
        m[1, 2] = 1.0
        writer.add(Record(image_key("train/a.png", data[0]), m, (40, 48), True, False))
    cfg = load_config(None, [*TINY, "experiment=tiny", f"output_dir={tmp_path}", "teacher.name=oracle",
                             f"teacher.store={store}", "model.variant=iq_ic_gc"])  # fmt: skip
    cfg.run_dir.mkdir(parents=True)
    save_config(cfg, cfg.run_dir / "config.yaml")
    model = build_student(cfg, 5)
    with torch.no_grad():  # gates away from their start, so C_F differs from the plain average
        for p in model.interaction_parameters():
            p.add_(0.5 * torch.randn_like(p))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(cfg.run_dir / "model.safetensors")
    )
    return cfg.run_dir, images


def test_load_trained_restores_the_saved_student(run: tuple[Path, list[Path]]) -> None:
    run_dir, images = run
    model, cfg = load_trained(run_dir)
    x = model_input([read_image(p)[0] for p in images], (32, 32))
    maps = student_maps(model, x)
    assert list(maps) == ["C_VFM", "C_AGT", "C_F"]
    assert maps["C_AGT"].shape == (2, 2, 2, 4, 4)  # (images, layers, heads, gh, gw)
    torch.testing.assert_close(maps["C_F"].sum((-2, -1)), torch.ones(2, 2, 2))
    assert not torch.allclose(maps["C_AGT"], maps["C_VFM"])  # P'_q was moved away from P_q
    state = dict(model.state_dict())
    saved = load_trained(run_dir)[0].state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in state)


def test_viz_reads_c_vlm_from_the_store_and_refuses_missing_images(run: tuple[Path, list[Path]]) -> None:
    run_dir, images = run
    out = run_dir / "fig5"
    written = run_viz(run_dir, images[:1], out)
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(KeyError, match=r"not in the interaction store .*b\.png.*--teacher"):
        run_viz(run_dir, images, out)


def test_viz_cli_with_oracle_teacher_per_head(run: tuple[Path, list[Path]]) -> None:
    run_dir, images = run
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = run_dir / "heads.png"
    argv = ["viz", str(run_dir), "--images", *map(str, images), "--teacher", "oracle", "--boxes", "0,0,24,20",
            "10,10,40,30", "--per", "head", "--layer", "1", "--out", str(out)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    for stem in ("heads_a", "heads_b"):
        assert (run_dir / f"{stem}.png").stat().st_size > 1000 and (run_dir / f"{stem}.pdf").is_file()
    with pytest.raises(ValueError, match="needs --boxes"):
        run_viz(run_dir, images, out, teacher="oracle")
