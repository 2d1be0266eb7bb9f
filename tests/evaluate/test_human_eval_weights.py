"""`lfi eval-human --teacher vit` finds the DeiT-Tiny under --data's weights/, wherever that and the cwd are."""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from lfi.cli.human import register
from lfi.extract.vit_teacher import SYNSETS_FILE, WEIGHTS_FILE_BF16
from tests.evaluate.test_human_eval import _tiny_osie


def test_eval_human_vit_teacher_reads_weights_under_data(
    trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "elsewhere" / "data"
    _tiny_osie(data)
    weights = data / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", pretrained=False)  # random weights: no download
    save_file(
        {k: v.to(torch.bfloat16) for k, v in deit.state_dict().items()}, str(weights / WEIGHTS_FILE_BF16)
    )
    (weights / SYNSETS_FILE).write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    monkeypatch.setenv("LFI_DATA", str(tmp_path / "no_shared_data_here"))  # the default place holds nothing
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "human"
    argv = ["eval-human", "--run", str(trained_run), "--data", str(data), "--teacher", "vit", "--limit", "2"]
    args = parser.parse_args([*argv, "--batch-size", "2", "--out", str(out)])
    assert args.func(args) == 0
    md = (out / "human_alignment.md").read_text()
    assert f"C_VLM teacher weights: {weights / WEIGHTS_FILE_BF16}." in md and "| C_VLM" in md
