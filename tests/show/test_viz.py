"""`lfi viz`: the trained run of `train` (and a copy reading another interaction store) -> Fig. 5 PNG and PDF."""

from __future__ import annotations

import argparse
import io
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lfi.cli.show import register
from lfi.config import load_config, save_config
from lfi.data.keys import image_key
from lfi.evaluate.maps import load_trained, model_input, read_image, run_maps, student_maps, student_outputs
from lfi.show.viz import run_viz, vlm_title
from lfi.store.shards import Record, StoreWriter
from tests.show.conftest import write_run


def _image(path: Path, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, p in enumerate(paths):
        _image(p, i)
    return paths


def copy_with_store(trained_run: Path, images: list[Path], tmp_path: Path, metadata: dict) -> Path:
    """A copy of the trained run whose interaction store (of `metadata`) holds C_VLM of a.png only."""
    store = tmp_path / "store"
    with StoreWriter(store, {**metadata, "grid": [4, 4]}) as writer:
        m = torch.zeros(4, 4)
        m[1, 2] = 1.0
        writer.add(Record(image_key("train/a.png", images[0].read_bytes()), m, (40, 48), True, False))
    run = tmp_path / "copied_run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    save_config(load_config(run / "config.yaml", [f"teacher.store={store}"]), run / "config.yaml")
    return run


@pytest.fixture
def run_with_store(trained_run: Path, images: list[Path], tmp_path: Path) -> Path:
    return copy_with_store(trained_run, images, tmp_path, {"teacher": "oracle"})


def test_load_trained_restores_the_trained_student(trained_run: Path, images: list[Path]) -> None:
    model, run = load_trained(trained_run)
    assert not model.training and run.cfg.experiment == "tiny"
    saved = load_file(str(trained_run / "model.safetensors"))
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    maps = student_maps(model, model_input([read_image(p)[0] for p in images], (32, 32)))
    assert list(maps) == ["C_VFM", "C_AGT", "C_F"]
    assert maps["C_AGT"].shape == (2, 2, 4, 4)  # (images, layers, gh, gw)
    torch.testing.assert_close(maps["C_F"].sum((-2, -1)), torch.ones(2, 2))
    heads = student_maps(model, model_input([read_image(p)[0] for p in images], (32, 32)), per_head=True)
    assert heads["C_AGT"].shape == (2, 2, 2, 4, 4)  # (images, layers, heads, gh, gw)
    torch.testing.assert_close(heads["C_F"].sum((-2, -1)), torch.ones(2, 2, 2))
    assert not torch.allclose(maps["C_AGT"], maps["C_VFM"])  # training moved P'_q away from P_q


def test_load_trained_refuses_a_detection_run(tmp_path: Path) -> None:
    config = {"task": "detection", "experiment": "det", "model": {"name": "detr", "variant": "vit"},
              "data": {"dataset": "coco"}}  # fmt: skip
    run = write_run(tmp_path, config, {"val": {"mAP": 0.4}})
    with pytest.raises(ValueError, match=r"config.yaml: task 'detection'; .* need a classification run"):
        load_trained(run)


def test_viz_reads_c_vlm_from_the_store_and_refuses_missing_images(
    run_with_store: Path, images: list[Path]
) -> None:
    out = run_with_store.parent / "fig5"
    written = run_viz(run_maps(run_with_store, images[:1]), out)
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(KeyError, match=r"not in the interaction store .*b\.png.*--teacher"):
        run_maps(run_with_store, images)


def test_viz_cli_with_oracle_teacher_per_head(trained_run: Path, images: list[Path], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "heads.png"
    argv = ["viz", str(trained_run), "--images", *map(str, images), "--teacher", "oracle", "--boxes", "0,0,24,20",
            "10,10,40,30", "--per", "head", "--layer", "1", "--out", str(out)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    for stem in ("heads_a", "heads_b"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 1000 and (tmp_path / f"{stem}.pdf").is_file()
    with pytest.raises(ValueError, match="needs --boxes"):
        run_maps(trained_run, images, teacher="oracle")
    one_box = ["viz", str(trained_run), "--images", *map(str, images), "--teacher", "oracle", "--boxes", "0,0,24,20",
               "--out", str(out)]  # fmt: skip
    args = parser.parse_args(one_box)
    with pytest.raises(ValueError, match="1 boxes for 2 images"):
        args.func(args)


def test_student_outputs_gives_the_logits_of_the_same_pass(trained_run: Path, images: list[Path]) -> None:
    model, _ = load_trained(trained_run)
    x = model_input([read_image(p)[0] for p in images], (32, 32))
    maps, logits = student_outputs(model, x)
    torch.testing.assert_close(logits, model(x))
    assert list(maps) == ["C_VFM", "C_AGT", "C_F"] and logits.shape == (2, 4)


def test_per_head_figures_need_the_maps_of_each_head(
    trained_run: Path, images: list[Path], tmp_path: Path
) -> None:
    maps = run_maps(trained_run, images[:1], teacher="none")
    with pytest.raises(ValueError, match="per_head=True"):
        run_viz(maps, tmp_path / "fig.png", per="head")


def test_vlm_title_names_the_family_the_store_recorded() -> None:
    llava = {"teacher": "hf", "family": "llava-1.5", "checkpoint": "llava-hf/llava-1.5-7b-hf"}
    assert vlm_title("hf", llava) == "C_VLM (teacher: LLaVA-1.5,\nllava-1.5-7b-hf)"
    qwen = {"teacher": "hf", "family": "qwen2-vl", "checkpoint": "/models/Qwen2-VL-7B-Instruct"}
    assert vlm_title("hf", qwen) == "C_VLM (teacher: qwen2-vl, Qwen2-VL-7B-Instruct,\nnot LLaVA-1.5)"
    assert "LLaVA-1.5" not in vlm_title("hf", {"teacher": "hf"})  # nothing recorded: nothing claimed
    assert vlm_title("llava") == "C_VLM (teacher: LLaVA-1.5)"
    assert vlm_title("oracle").endswith("not LLaVA-1.5)") and "substitute" in vlm_title("vit")


@pytest.mark.parametrize(
    ("family", "caption"),
    [
        ("llava-1.5", "C_VLM (teacher: LLaVA-1.5, tiny-llava)"),
        ("smolvlm", "C_VLM (teacher: smolvlm, tiny-llava, not LLaVA-1.5)"),
    ],
)
def test_viz_captions_an_hf_store_by_its_family(
    trained_run: Path, images: list[Path], tmp_path: Path, family: str, caption: str
) -> None:
    """The run's config says teacher 'hf' or not: the caption comes from the store's own record."""
    meta = {"teacher": "hf", "family": family, "checkpoint": str(tmp_path / "tiny-llava")}
    run = copy_with_store(trained_run, images, tmp_path, meta)
    run_viz(run_maps(run, images[:1]), None, html=tmp_path / "page")
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", (tmp_path / "page" / "index.html").read_text())
    assert captions[2] == caption
