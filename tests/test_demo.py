"""`lfi demo` in a reduced size: the whole pipeline runs and its report holds both models' ID and OOD accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lfi.cli.demo import register
from lfi.demo.synthetic import ShortcutShapes


def test_synthetic_shortcut_splits():
    train, ood = ShortcutShapes("train", 400), ShortcutShapes("ood", 400)
    agree = lambda ds: float((ds.backgrounds == ds.labels_t).float().mean())  # noqa: E731
    assert agree(train) > 0.9 and 0.15 < agree(ood) < 0.35  # shortcut in train, none out of distribution
    s = train[0]
    assert s["image"].shape == (3, 48, 48) and s["image"].dtype == torch.uint8
    x0, y0, x1, y1 = s["boxes"][0].tolist()
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert torch.equal(ShortcutShapes("train", 400).images, train.images)  # deterministic
    assert train[0]["key"] != ood[0]["key"]


def test_quick_demo_writes_the_report(tmp_path: Path):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--out", str(tmp_path), "--quick"])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["teacher"] == "oracle (ground-truth boxes)"
    for model in ("vit", "ivit"):
        for split in ("id", "ood"):
            assert 0.0 <= report["models"][model]["test"][split]["acc1"] <= 100.0
    md = (tmp_path / "report.md").read_text()
    assert "| ViT |" in md and "| I-ViT |" in md and "ood top-1" in md
    assert (tmp_path / "maps.png").stat().st_size > 0
    assert report["timings_s"]["total_s"] > 0
