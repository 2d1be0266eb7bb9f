"""`lfi eval-human` (`lfi.show.human_eval`): the trained run's maps scored against human maps (offline, on
hand-made samples), and a converted DeiT-Tiny with the ViT teacher on 2 real OSIE images."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lfi.cli.human import register
from lfi.config import config_to_dict
from lfi.show.human_eval import human_alignment, load_student, map_function, write_outputs
from lfi.train.build import build_model
from tests.show.conftest import tiny_config, write_run


def _samples(n: int = 3) -> list[dict[str, torch.Tensor]]:
    """OSIE-like samples: uint8 image, human map (sums to 1) and one fixated pixel each, all 48 x 64."""
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        human = torch.rand(48, 64, generator=g)
        fixations = torch.zeros(48, 64, dtype=torch.bool)
        fixations[10 + i, 20 + 3 * i] = True
        image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8, generator=g)
        samples.append({"image": image, "human_map": human / human.sum(), "fixations": fixations})
    return samples


def test_human_alignment_of_a_trained_run(trained_run: Path, tmp_path: Path) -> None:
    student = load_student(run=trained_run)
    assert student.size == 32 and "variant iq_ic_gc" in student.description
    table = human_alignment(_samples(), student, teacher="none", limit=2, batch_size=1)
    assert list(table.scores) == ["C_VFM", "C_AGT"] and table.scores["C_AGT"]["nss"].numel() == 2
    assert not torch.equal(table.scores["C_AGT"]["cosine"], table.scores["C_VFM"]["cosine"])  # trained P'_q
    written = write_outputs(table, tmp_path, "header", "none")
    assert [p.name for p in written] == [f"human_alignment{s}" for s in (".md", ".csv", ".png", ".pdf")]
    md = written[0].read_text()
    assert md.startswith("header\n") and md.count("C_AGT / C_VFM") == 1 and "no C_VLM (no teacher)" not in md
    assert all(p.stat().st_size > 100 for p in written)


def test_students_without_c_agt_or_weights_are_refused(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path, experiment="plain", model={"variant": "vit"}, teacher={"name": "none", "store": None}
    )
    run = write_run(tmp_path, config_to_dict(cfg), {"id": {"acc1": 50.0, "n": 4}})
    save_file(build_model(cfg, 2).state_dict(), str(run / "model.safetensors"))
    with pytest.raises(ValueError, match="no interaction queries"):
        map_function(load_student(run=run), "none")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval-human", "--model", "deit_tiny", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--checkpoint"):
        args.func(args)


@pytest.mark.data
def test_eval_human_on_real_osie_with_a_converted_deit_tiny(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    weights = shared_data / "weights" / "deit_tiny_patch16_224.safetensors"
    argv = ["eval-human", "--model", "deit_tiny", "--checkpoint", str(weights), "--data", str(shared_data),
            "--limit", "2", "--batch-size", "2", "--out", str(tmp_path)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    # freshly converted: P'_q = P_q, so C_AGT is C_VFM and the ratio is exactly 1; printed once
    assert "C_AGT / C_VFM: cosine 1.00x (paper: 2.7x)" in printed and printed.count("C_AGT / C_VFM") == 1
    md = (tmp_path / "human_alignment.md").read_text()
    assert "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)" in md
    rows = {
        line.split(",")[0]: line.split(",")
        for line in (tmp_path / "human_alignment.csv").read_text().splitlines()
    }
    assert list(rows) == ["map", "C_VFM", "C_VLM", "C_AGT"] and rows["C_AGT"][-1] == "2"
    cosine = {name: float(rows[name][1]) for name in ("C_VFM", "C_VLM", "C_AGT")}
    assert cosine["C_AGT"] == cosine["C_VFM"] and all(0 < c <= 1 for c in cosine.values())
    assert cosine["C_VLM"] != pytest.approx(cosine["C_VFM"])  # a different map, scored on its own
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "human_alignment").with_suffix(suffix).stat().st_size > 1000
