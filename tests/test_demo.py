"""`lfi demo`: the shortcut set, the student it picks, the verdict rule, and a reduced run end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from lfi.cli.demo import register
from lfi.demo import pipeline
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
    assert ShortcutShapes("id", 8, size=64)[0]["image"].shape == (3, 64, 64)  # the demo's size


def _stats(*values: float) -> dict:
    return pipeline._stats(list(values))


def test_verdict_needs_the_seeds_ranges_apart():
    word, sentence = pipeline.verdict({"I-ViT": _stats(50, 48, 52), "ViT": _stats(30, 29, 31)})
    assert word == "helped" and "I-ViT 50.0 ± 2.0 vs ViT 30.0 ± 1.0" in sentence
    # a higher mean whose seeds overlap the baseline's is no difference
    word, sentence = pipeline.verdict({"I-ViT": _stats(40, 28, 45), "ViT": _stats(30, 29, 31)})
    assert word == "no difference" and sentence.startswith("no difference")
    assert pipeline.verdict({"I-ViT": _stats(20, 21), "ViT": _stats(30, 29)})[0] == "hurt"


def test_student_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert not pipeline.resolve_student(None, random_init=True).pretrained
    with pytest.raises(FileNotFoundError, match="deit_tiny"):
        pipeline.resolve_student(tmp_path)  # an explicit --data without the weights is an error
    (tmp_path / pipeline.WEIGHTS).parent.mkdir(parents=True)
    (tmp_path / pipeline.WEIGHTS).write_bytes(b"")
    student = pipeline.resolve_student(tmp_path)
    assert student.pretrained and student.checkpoint == str(tmp_path / pipeline.WEIGHTS)
    monkeypatch.setattr(pipeline, "default_data_roots", lambda: [tmp_path / "missing"])
    assert not pipeline.resolve_student(None).pretrained  # no weights anywhere: the named fallback


def _run(tmp_path: Path, *extra: str) -> dict:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--out", str(tmp_path), "--quick", *extra])
    assert args.func(args) == 0
    return json.loads((tmp_path / "report.json").read_text())


def _check_report(tmp_path: Path, report: dict) -> list[str]:
    assert report["verdict"] in ("helped", "hurt", "no difference")
    assert set(report["models"]) == {"ViT", "IQ+GC (no alignment)", "I-ViT"}
    for model in report["models"].values():
        assert len(model["runs"]) == len(report["seeds"]) >= 2
        for split in ("id", "ood"):
            assert 0.0 <= model[split]["mean"] <= 100.0 and model[split]["std"] >= 0.0
        assert 0.0 <= model["object_mass"]["mean"] <= 1.0
        for run in model["runs"]:
            assert len(run["val_acc1_per_epoch"]) == report["epochs"]
            assert (tmp_path / "runs" / run["experiment"] / "metrics.json").is_file()
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[2].startswith(f"**Verdict: {report['verdict']}")  # the verdict first, with its figures
    assert "OOD top-1 I-ViT" in md[2] and "attention mass on the object" in md[4]
    assert (tmp_path / "maps.png").stat().st_size > 0
    return md


def test_quick_demo_random_init_says_so(tmp_path: Path):
    report = _run(tmp_path, "--random-init")
    md = _check_report(tmp_path, report)
    assert not report["student"]["pretrained"] and "RANDOM-INIT" in md[2]


def test_quick_demo_pretrained(tmp_path: Path, shared_data: Path):
    if not (shared_data / pipeline.WEIGHTS).is_file():
        pytest.skip(f"no {pipeline.WEIGHTS} in {shared_data}")
    report = _run(tmp_path, "--data", str(shared_data))
    md = _check_report(tmp_path, report)
    assert report["student"]["pretrained"] and "DeiT-Tiny" in md[4] and "RANDOM-INIT" not in "\n".join(md)
    # the aligned model's class token looks at the object more than the plain ViT's, even after 2 epochs
    mass = {k: m["object_mass"]["mean"] for k, m in report["models"].items()}
    assert mass["I-ViT"] > mass["ViT"]
