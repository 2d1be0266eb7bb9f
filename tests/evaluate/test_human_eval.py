"""`lfi eval-human` (`lfi.evaluate.human`, tables by `lfi.show.human_report`): the trained run's maps scored against human maps (offline, on
hand-made samples and a tiny OSIE folder with an interaction store), and a converted DeiT-Tiny with the ViT
teacher on 2 real OSIE images."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from safetensors.torch import save_file

from lfi.cli.human import register
from lfi.config import config_to_dict
from lfi.data.keys import image_key
from lfi.evaluate.human import (
    as_rows,
    evaluate_human,
    human_alignment,
    load_student,
    map_function,
    row_labels,
    student_map_function,
)
from lfi.show.human_report import report_text, write_outputs, write_report
from lfi.store.shards import Record, StoreWriter
from lfi.train.build import build_model
from tests.show.conftest import tiny_config, write_run


def run_eval_human(data: Path, out: Path, run: Any = None, **kwargs: Any) -> tuple[str, list[Path]]:
    """What `lfi eval-human` does: score (evaluate stage), then write the tables and chart (show stage)."""
    evaluation = evaluate_human(data, run, **kwargs)
    return report_text(evaluation), write_report(evaluation, out)


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
@pytest.mark.slow
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
    # freshly converted: P'_q = P_q, so C_AGT is C_VFM and every ratio is exactly 1
    assert "| mean | 1.00x | 1.00x | 1.00x |" in printed and "| L11 | 1.00x" in printed
    report = json.loads((tmp_path / "human_alignment.json").read_text())
    assert "C_VLM (teacher: DeiT-Tiny ViT, VFM->VFM substitute)" in report["header"]
    assert report["images"] == 2 and list(report["references"]) == ["C_VLM", "centre bias"]
    assert list(report["layers"]) == [f"L{k}" for k in range(12)]
    cosine = {name: report["maps"][name]["cosine"]["mean"] for name in ("C_VFM", "C_AGT")}
    cosine["C_VLM"] = report["references"]["C_VLM"]["cosine"]["mean"]
    assert cosine["C_AGT"] == cosine["C_VFM"] and all(0 < c <= 1 for c in cosine.values())
    assert cosine["C_VLM"] != pytest.approx(cosine["C_VFM"])  # a different map, scored on its own
    # on real fixations every map, and the centre bias, ranks fixated pixels above chance
    assert report["maps"]["C_AGT"]["auc_judd"]["mean"] > 0.6
    assert report["references"]["centre bias"]["auc_judd"]["mean"] > 0.6
    assert report["references"]["centre bias"]["nss"]["mean"] > 0.5
    rows = [line.split(",") for line in (tmp_path / "human_alignment.csv").read_text().splitlines()]
    assert rows[1][:2] == ["C_VFM", ""] and rows[1][-1] == "2"
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "human_alignment").with_suffix(suffix).stat().st_size > 1000


def _tiny_osie(root: Path, n: int = 3) -> list[bytes]:
    """An extracted OSIE folder: n 48x64 JPEG stimuli and a fixations.mat of 2 subjects each; returns the
    stimuli's bytes."""
    stimuli = root / "osie" / "data" / "stimuli"
    stimuli.mkdir(parents=True)
    (root / "osie" / "data" / "eye").mkdir()
    g = torch.Generator().manual_seed(1)
    entries = np.empty((n, 1), dtype=object)
    datas = []
    for i in range(n):
        pixels = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8, generator=g).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG")
        (stimuli / f"{1001 + i}.jpg").write_bytes(buf.getvalue())
        datas.append(buf.getvalue())
        subject = {"fix_x": np.array([10.0 + i, 40.0]), "fix_y": np.array([20.0, 30.0 - i]),
                   "fix_duration": np.array([200.0, 300.0])}  # fmt: skip
        entries[i, 0] = {"img": f"{1001 + i}.jpg", "subjects": np.array([subject, subject], dtype=object)}
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"fixations": entries})
    (root / "osie" / "data" / "eye" / "fixations.mat").write_bytes(buf.getvalue())
    return datas


def _store(path: Path, datas: list[bytes]) -> Path:
    """An interaction store of the OSIE stimuli (keyed under some other path: found by the bytes' hash)."""
    with StoreWriter(path, {"teacher": "oracle", "grid": [4, 4]}) as writer:
        for i, data in enumerate(datas):
            m = torch.zeros(4, 4)
            m[1 + i % 2, 2] = 1.0
            writer.add(Record(image_key(f"elsewhere/{i}.jpg", data), m, (48, 64), True, False))
    return path


def test_eval_human_over_two_runs_with_a_store_per_layer(trained_run: Path, tmp_path: Path) -> None:
    datas = _tiny_osie(tmp_path / "data")
    store = _store(tmp_path / "store", datas)
    seed1 = tmp_path / "seed1"  # the same weights in another folder: the over-runs std must be 0
    shutil.copytree(trained_run, seed1, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "human"
    argv = ["eval-human", "--run", str(trained_run), str(seed1), "--data", str(tmp_path / "data"), "--teacher",
            "none", "--store", str(store), "--limit", "3", "--batch-size", "2", "--out", str(out)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    report = json.loads((out / "human_alignment.json").read_text())
    assert report["images"] == 3 and report["aggregated_over"] == "runs" and len(report["runs"]) == 2
    assert list(report["maps"]) == ["C_VFM", "C_AGT", "C_F"]
    assert list(report["references"]) == ["C_VLM (store)", "centre bias"]
    assert list(report["layers"]) == ["L0", "L1"] and list(report["layers"]["L1"]) == [
        "C_VFM",
        "C_AGT",
        "C_F",
    ]
    assert set(report["maps"]["C_AGT"]) == {"cosine", "cc", "nss", "auc_judd"}
    assert set(report["layers"]["L0"]["C_F"]) == {"cosine", "cc", "nss"}  # per layer: no AUC-Judd by default
    for stats in (report["maps"]["C_AGT"], report["layers"]["L0"]["C_F"]):
        assert all(s["n"] == 2 and s["std"] == pytest.approx(0.0, abs=1e-12) for s in stats.values())
    assert 0.0 <= report["maps"]["C_AGT"]["auc_judd"]["mean"] <= 1.0
    ratios = report["ratio_agt_over_vfm"]
    assert list(ratios) == ["mean", "L0", "L1"] and set(ratios["L1"]) == {"cosine", "cc", "nss"}
    per_run = report["per_run"]
    assert [r["maps"]["C_AGT"]["cosine"]["mean"] for r in per_run] == [
        report["maps"]["C_AGT"]["cosine"]["mean"]
    ] * 2
    cosine = ratios["L1"]["cosine"]
    agt, vfm = (
        report["layers"]["L1"]["C_AGT"]["cosine"]["mean"],
        report["layers"]["L1"]["C_VFM"]["cosine"]["mean"],
    )
    assert cosine["runs"][0] == pytest.approx(agt / vfm) and cosine["mean"] == pytest.approx(agt / vfm)
    assert agt != pytest.approx(vfm)  # trained P'_q: C_AGT differs from C_VFM at each layer
    md = (out / "human_alignment.md").read_text()
    assert "Mean ± std over 2 runs" in md and "| L1 | C_AGT |" in md and "| C_VLM (store) (reference) |" in md
    assert f"interaction store {store}" in md and "| mean | " in md
    csv_rows = (out / "human_alignment.csv").read_text().splitlines()
    assert csv_rows[0].startswith("map,layer,cosine_mean") and "C_AGT,1," in "\n".join(csv_rows)
    assert (out / "human_alignment.png").stat().st_size > 1000

    # one run: mean ± std over the images, the same means
    text, _ = run_eval_human(
        tmp_path / "data", tmp_path / "one", trained_run, teacher="none", limit=3, batch_size=3
    )
    single = json.loads((tmp_path / "one" / "human_alignment.json").read_text())
    assert single["aggregated_over"] == "images" and single["maps"]["C_AGT"]["cosine"]["n"] == 3
    assert single["maps"]["C_AGT"]["cosine"]["mean"] == pytest.approx(
        report["maps"]["C_AGT"]["cosine"]["mean"]
    )
    assert list(single["references"]) == ["centre bias"] and "Mean ± std over images" in text


def test_eval_human_names_osie_images_missing_from_the_store(trained_run: Path, tmp_path: Path) -> None:
    datas = _tiny_osie(tmp_path / "data")
    store = _store(tmp_path / "store", datas[:2])
    with pytest.raises(KeyError, match=r"not in the interaction store .*1003\.jpg"):
        run_eval_human(tmp_path / "data", tmp_path / "out", trained_run, teacher="none", limit=3, store=store)


def _plain_vit_run(tmp_path: Path) -> Path:
    """A run folder of a plain ViT (variant 'vit': no interaction queries), with untrained weights."""
    cfg = tiny_config(
        tmp_path, experiment="plain", model={"variant": "vit"}, teacher={"name": "none", "store": None}
    )
    run = write_run(tmp_path, config_to_dict(cfg), {"id": {"acc1": 50.0, "n": 4}})
    save_file(build_model(cfg, 2).state_dict(), str(run / "model.safetensors"))
    return run


def test_a_plain_vit_is_scored_on_c_vfm_at_the_alignment_layers(tmp_path: Path) -> None:
    student = load_student(run=_plain_vit_run(tmp_path))
    images = torch.stack([s["image"] for s in _samples(2)])
    maps = student_map_function(student)(images, [])
    layers = list(student.model.converted)
    assert list(maps) == ["C_VFM", *(f"C_VFM@L{k}" for k in layers)]
    aligned = torch.stack([maps[f"C_VFM@L{k}"] for k in student.model.align_layers]).mean(0)
    torch.testing.assert_close(maps["C_VFM"], aligned)  # the plain map: the mean over the alignment layers


def test_rows_are_labelled_by_the_folder_their_runs_share(tmp_path: Path) -> None:
    rows = as_rows(
        [[tmp_path / "s/probe/tune/seed0", tmp_path / "s/probe/seed1"], [tmp_path / "s/full/seed0"]]
    )
    assert row_labels(rows) == ["probe", "full/seed0"]
    assert row_labels(as_rows([tmp_path / "s/probe/seed0", tmp_path / "s/probe/seed1"])) == ["probe"]
    with pytest.raises(ValueError, match="more than once"):
        row_labels(as_rows([[tmp_path / "a/x"], [tmp_path / "a/x"]]))


def test_eval_human_compares_rows_each_as_if_scored_alone(trained_run: Path, tmp_path: Path) -> None:
    _tiny_osie(tmp_path / "data")
    study = tmp_path / "study"
    for seed in ("seed0", "seed1"):
        shutil.copytree(
            trained_run, study / "ivit" / seed, ignore=shutil.ignore_patterns("checkpoints", "tb")
        )
    shutil.copytree(_plain_vit_run(tmp_path / "plain"), study / "vit" / "seed0")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "rows"
    argv = ["eval-human", "--run", str(study / "vit/seed0"), "--run", str(study / "ivit/seed0"),
            str(study / "ivit/seed1"), "--data", str(tmp_path / "data"), "--teacher", "none", "--limit", "3",
            "--batch-size", "2", "--out", str(out)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    report = json.loads((out / "human_alignment.json").read_text())
    assert [r["row"] for r in report["rows"]] == ["vit/seed0", "ivit"] and report["images"] == 3
    vit, ivit = report["rows"]
    assert list(vit["maps"]) == ["C_VFM"] and vit["ratio_agt_over_vfm"] == {}
    assert list(ivit["maps"]) == ["C_VFM", "C_AGT", "C_F"] and len(ivit["runs"]) == 2
    assert list(report["references"]) == ["centre bias"]
    for row, folders in (
        ("vit", ["vit/seed0"]),
        ("ivit", ["ivit/seed0", "ivit/seed1"]),
    ):  # a lone run: its folder
        run_eval_human(
            tmp_path / "data",
            tmp_path / row,
            [study / f for f in folders],
            teacher="none",
            limit=3,
            batch_size=3,
        )
        alone = json.loads((tmp_path / row / "human_alignment.json").read_text())
        together = report["rows"][0 if row == "vit" else 1]
        for name, stats in alone["maps"].items():
            for metric, stat in stats.items():
                # batches of 2 together, of 3 alone: float32 rounding in the model differs (~1e-6)
                assert together["maps"][name][metric]["mean"] == pytest.approx(
                    stat["mean"], rel=1e-5, abs=1e-5
                ), (
                    row,
                    name,
                    metric,
                )
        cosine_ratios = {k: v["cosine"]["mean"] for k, v in alone["ratio_agt_over_vfm"].items()}
        assert {k: v["cosine"]["mean"] for k, v in together["ratio_agt_over_vfm"].items()} == pytest.approx(
            cosine_ratios
        )
        for name, stats in alone["references"].items():  # batches of 3 alone, of 2 together: rounding apart
            assert {m: x["mean"] for m, x in report["references"][name].items()} == pytest.approx(
                {m: x["mean"] for m, x in stats.items()}
            )
    md = (out / "human_alignment.md").read_text()
    assert (
        "| vit/seed0 | C_VFM | " in md
        and "| 1 run (std over images) |" in md
        and "| ivit | C_AGT |" in md
        and "| reference | centre bias |" in md
    )
    assert "| ivit | " in md.split("C_AGT / C_VFM cosine ratio")[1] and "### ivit" in md
    assert "| vit/seed0 | " not in md.split("C_AGT / C_VFM cosine ratio")[1].split("###")[0]
    csv_rows = [line.split(",") for line in (out / "human_alignment.csv").read_text().splitlines()]
    assert csv_rows[0][:3] == ["row", "map", "layer"] and {r[0] for r in csv_rows[1:]} == {
        "vit/seed0",
        "ivit",
        "reference",
    }
    assert (out / "human_alignment.png").stat().st_size > 1000
