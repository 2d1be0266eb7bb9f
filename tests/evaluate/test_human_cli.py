"""`lfi eval-human` on 4 real OSIE images with the real DeiT-Tiny, converted to I-ViT, and the ViT teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lfi.evaluate.human_cli import register


@pytest.mark.data
def test_eval_human_on_real_osie_with_a_converted_deit_tiny(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    weights = shared_data / "weights" / "deit_tiny_patch16_224.safetensors"
    argv = ["eval-human", "--model", "deit_tiny", "--checkpoint", str(weights), "--data", str(shared_data),
            "--limit", "4", "--batch-size", "2", "--out", str(tmp_path)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    # freshly converted: P'_q = P_q, so C_AGT is C_VFM and the ratio is exactly 1
    assert "C_AGT / C_VFM cosine ratio: 1.00x (paper: 2.7x" in printed
    md = (tmp_path / "human_alignment.md").read_text()
    assert "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)" in md
    rows = {
        line.split(",")[0]: line.split(",")
        for line in (tmp_path / "human_alignment.csv").read_text().splitlines()
    }
    assert list(rows) == ["map", "C_VFM", "C_VLM", "C_AGT"] and rows["C_AGT"][-1] == "4"
    cosine = {name: float(rows[name][1]) for name in ("C_VFM", "C_VLM", "C_AGT")}
    assert cosine["C_AGT"] == cosine["C_VFM"] and all(0 < c <= 1 for c in cosine.values())
    assert cosine["C_VLM"] != pytest.approx(cosine["C_VFM"])  # a different map, scored on its own
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "human_alignment").with_suffix(suffix).stat().st_size > 1000


def test_eval_human_needs_a_model_source() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval-human", "--model", "deit_tiny", "--out", "x"])
    with pytest.raises(ValueError, match="--checkpoint"):
        args.func(args)
