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
    assert set(report["models"]) == {
        "ViT",
        "IQ+GC (no alignment)",
        "I-ViT",
        *pipeline.CONTROL_LABELS.values(),
    }
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
    ood = {k: m["ood"] for k, m in report["models"].items()}
    assert report["controls"] == pipeline.control_findings(ood)  # from this run's figures
    assert "**Controls** (I-ViT aligned to maps without the image's object" in md[6]
    assert report["controls"]["sentence"] in md[6]
    link = md[8].split("([the study](", 1)[1].split(")", 1)[0]
    assert (tmp_path / link).resolve() == pipeline.REAL_DATA_REPORT and "makes no difference" in md[8]
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


def _ood(**means: float) -> dict:
    """OOD stats per model from one mean each (three seeds at mean - 1, mean, mean + 1)."""
    labels = {"vit": "ViT", "ivit": "I-ViT", **pipeline.CONTROL_LABELS}
    return {labels[k]: _stats(m - 1, m, m + 1) for k, m in means.items()}


def test_control_findings_follow_the_figures():
    """Issue 28 item 6 / 33 item 8: what the controls show is computed from the OOD figures, whichever way."""
    centre, shuffled = pipeline.CONTROL_LABELS["centre"], pipeline.CONTROL_LABELS["shuffled"]
    both_below = pipeline.control_findings(_ood(vit=30, ivit=50, centre=31, shuffled=32))
    assert both_below["sentence"].startswith("neither control reaches I-ViT")
    assert f"{centre} OOD 31.0 ± 1.0 %" in both_below["sentence"]
    assert both_below["per_control"][shuffled] == {"ivit_vs_control": "helped", "control_vs_vit": "no difference",
                                                   "ood": "32.0 ± 1.0"}  # fmt: skip
    prior = pipeline.control_findings(_ood(vit=30, ivit=50, centre=49, shuffled=31))
    assert (
        prior["sentence"].startswith(f"{centre} not below I-ViT")
        and "a prior gives (part of) the gain" in prior["sentence"]
    )
    assert prior["sentence"].endswith(f"{shuffled} below I-ViT")
    neither = pipeline.control_findings(_ood(vit=30, ivit=31, centre=30, shuffled=30))
    assert "does not beat ViT either" in neither["sentence"]


def test_controls_train_on_the_centre_prior_and_on_other_images_maps(tmp_path: Path):
    """The demo's control maps are `lfi.maps.centre_bias` and the store's maps under `derangement`."""
    from lfi.data.controls import derangement
    from lfi.extract.oracle import OracleTeacher
    from lfi.extract.run import extract
    from lfi.maps import centre_bias
    from lfi.store.shards import InteractionStore

    train = ShortcutShapes("train", 8, size=pipeline.IMG)
    extract(OracleTeacher(grid=(4, 4)), train, tmp_path / "store", progress=False)
    store = InteractionStore(tmp_path / "store")
    keys = [train[i]["key"] for i in range(len(train))]
    own = pipeline.training_maps(store, keys, "none", 0)
    assert torch.allclose(
        pipeline.training_maps(store, keys, "centre", 0), centre_bias((4, 4)).expand(8, 4, 4)
    )
    shuffled = pipeline.training_maps(store, keys, "shuffled", 1)
    other = derangement(keys, 1)
    assert all(torch.equal(shuffled[i], own[keys.index(other[k])]) for i, k in enumerate(keys))
    assert not torch.equal(shuffled, own)


def test_maps_figure_has_a_colour_bar_and_predictions(tmp_path: Path):
    from lfi.extract.oracle import OracleTeacher
    from lfi.train.build import build_classifier

    data, _ = pipeline.demo_data("quick")
    student = pipeline.random_student()
    models = {}
    for name, variant in (("vit", "vit"), ("ivit", "iq_ic_gc")):
        cfg = pipeline.demo_config(name, variant, student, tmp_path, tmp_path / "store", 1, 0)
        models[name] = build_classifier(cfg, len(data.classes))
    fig = pipeline.maps_figure(data, OracleTeacher(grid=(4, 4)), models["ivit"], models["vit"], n=2)
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "attention / the map's maximum"]
    assert len(bars) == 1  # one colour bar: every overlay's scale
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().count("\n") == 2]
    assert len(rows) == 2 and all(r.split("\n")[1].startswith("ViT: ") and "I-ViT: " in r for r in rows)
    assert rows[0].split("\n")[0] == data.classes[data.tests["ood"][0]["label"]]
