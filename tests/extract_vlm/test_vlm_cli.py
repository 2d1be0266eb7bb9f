"""`lfi extract --teacher hf --teacher-arg model=FOLDER`: the family comes from the saved config, offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from lfi.cli.extract import register
from lfi.extract.teacher import build_teacher
from lfi.extract.vlm.loader import load_vlm
from lfi.store.shards import InteractionStore

FAMILY_NAMES = {
    "llava": "llava-1.5",
    "llava_next": "llava-next",
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2-vl",
    "paligemma": "paligemma",
    "idefics3": "idefics3",
    "smolvlm": "smolvlm",
    "gemma3": "gemma3",
}


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lfi")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _class_folders(root: Path) -> Path:
    """Two classes, one image each, of different aspect ratios."""
    g = torch.Generator().manual_seed(0)
    for name, (h, w) in {"cat": (90, 150), "red_fox": (160, 70)}.items():
        (root / name).mkdir(parents=True)
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(root / name / "a.png")
    return root


def test_cli_extracts_a_store_with_each_family(saved_family, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_type, folder = saved_family
    data, out = _class_folders(tmp_path / "photos"), tmp_path / "store"
    argv = ["extract", "--teacher", "hf", "--teacher-arg", f"model={folder}", "--teacher-arg", "layers=[1]"]
    argv += ["--grid", "6", "8", "--dataset", "imagefolder", "--data", str(data), "--out", str(out)]
    assert _cli(*argv, "--workers", "0", "--batch-size", "2") == 0
    assert "2 written" in capsys.readouterr().out
    store = InteractionStore(out, expect={"teacher": "hf", "grid": [6, 8]})
    assert store.metadata["family"] == FAMILY_NAMES[model_type] and store.metadata["checkpoint"] == folder
    keys = store.keys()
    assert len(keys) == 2
    for key in keys:
        assert store.map(key).shape == (6, 8) and torch.isfinite(torch.as_tensor(store.map(key))).all()
        assert json.loads(json.dumps(store[key].info))["answer"].startswith("{foreground: [")


def test_remote_code_stays_off_and_unknown_families_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip"}))
    with pytest.raises(ValueError, match="no lfi VLM family for model_type 'blip'"):
        load_vlm(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mine", "auto_map": {"AutoConfig": "x.Y"}})
    )
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_vlm(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="needs model="):
        build_teacher("hf")
