"""`lfi report`: hand-made run folders in the format of `lfi.train.runs` (ViT-L and DETR-R50 are too big to
train here) and the run trained by `train`, placed in the paper's tables."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from lfi.cli.show import register
from lfi.show.report import build_report, mean_std, place
from lfi.train.runs import load_run
from tests.show.conftest import write_run

CHECKPOINT = {"checkpoint": "weights/vit.safetensors"}
ALIGNED = {"teacher": {"name": "vit", "store": "stores/x"}}


def _classification(name: str, model: str, variant: str, **extra: Any) -> dict[str, Any]:
    """A TinyImageNet row at 224 px; aligned variants read the 'vit' teacher's store."""
    config = {"experiment": name, "model": {"name": model, "variant": variant, **CHECKPOINT},
              "data": {"dataset": "tinyimagenet", "img_size": 224}, "optim": {"lr": 1e-4}}  # fmt: skip
    if variant != "vit":
        config |= ALIGNED
    for section, values in extra.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def _detection(name: str, variant: str, **data: Any) -> dict[str, Any]:
    model = "conditional_detr" if name.startswith("t7") else "detr"
    teacher = {"name": "llava", "store": "stores/coco"} if variant != "vit" else {"name": "none"}
    return {"task": "detection", "experiment": name, "model": {"name": model, "variant": variant},
            "teacher": teacher, "data": {"dataset": "coco", **data}}  # fmt: skip


def _top1(acc: float, n: int = 10000) -> dict[str, dict[str, float]]:
    return {"val": {"acc1": acc, "acc5": 99.0, "loss": 0.5, "n": n}}


def _coco(mAP: float) -> dict[str, dict[str, float]]:  # COCOeval's [0, 1]; -1: no ground truth in the range
    return {"val": {"mAP": mAP, "AP50": 0.6, "AP75": 0.4, "AP_S": -1.0, "AP_M": 0.3, "AP_L": 0.5}}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    r = tmp_path / "runs"
    vit_s = ivit_s = "vit_small_patch16_224"
    pacs = {
        "dataset": "pacs",
        "train_domains": ["art_painting", "photo", "sketch"],
        "test_domains": ["cartoon"],
    }
    return [
        write_run(r, _classification("t1/vit_s0", vit_s, "vit", seed=0), _top1(80.0), [50.0, 70.0, 80.0]),
        # another machine's image cache: pooled with seed 0 all the same
        write_run(
            r,
            _classification("t1/vit_s1", vit_s, "vit", seed=1, data={"cache_dir": "/other/cache"}),
            _top1(82.0),
            [40.0, 60.0, 82.0],
        ),  # fmt: skip
        write_run(r, _classification("t1/ivit_s", ivit_s, "iq_ic_gc"), _top1(83.0), [75.0, 80.0, 83.0]),
        # another learning rate: the same table cell, but not pooled with seeds 0 / 1
        write_run(r, _classification("t1/vit_lr", vit_s, "vit", optim={"lr": 1e-3}), _top1(50.0)),
        write_run(r, _classification("t1/ivit_l", "vit_large_patch16_224", "iq_ic_gc"), _top1(90.0)),
        write_run(
            r,
            _classification(
                "t4/ivit_l", "vit_large_patch16_224", "iq_ic_gc", data=pacs, teacher={"name": "llava"}
            ),
            {"cartoon": {"acc1": 33.0, "n": 2344}, "mean_acc1": 33.0},
        ),  # fmt: skip
        write_run(r, _detection("t6/with", "iq_ic_gc"), _coco(0.436), column="val/mAP"),
        write_run(r, _detection("t6/without", "vit"), _coco(0.42), column="val/mAP"),
        write_run(r, _detection("t7/with", "iq_ic_gc", ratio=0.1), _coco(0.40), column="val/mAP"),
    ]


def test_place_puts_runs_by_their_config(runs: list[Path]) -> None:
    placed = [place(load_run(p)) for p in runs]
    assert [(e.table, e.row) for e in placed] == [
        ("1", "ViT-S/16"), ("1", "ViT-S/16"), ("1", "I-ViT-S/16"), ("1", "ViT-S/16"), ("1", "I-ViT-L/16"),
        ("4", "I-ViT-L/16"), ("6", "detection w/ C_VLM, DETR-R50"), ("6", "detection w/o C_VLM, DETR-R50"),
        ("7", "w/ C_VLM, Conditional-DETR-R50"),
    ]  # fmt: skip
    assert placed[0].teacher == "none" and placed[2].teacher == "vit" and placed[5].teacher == "llava"
    assert placed[5].values == {"cartoon": 33.0} and placed[5].n == {"cartoon": 2344}  # mean_acc1 is no set
    assert placed[6].values == {"mAP": pytest.approx(43.6)} and placed[6].n == {}  # COCO metrics carry no n
    assert placed[8].values["AP_S"] != placed[8].values["AP_S"]  # COCOeval's -1 is undefined (NaN), not -100


def test_report_tables_pool_seeds_name_teachers_and_show_the_paper(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.md"
    text = build_report(runs, out, threshold=80.0)
    assert out.read_text() == text
    table1 = text.split("### Table 1.")[1].split("###")[0]
    assert "| row | teacher | top-1 (ours) | top-1 (paper) | img | epochs | n | seeds | #params |" in table1
    # seeds 0 and 1 pooled: mean 81, sample std sqrt(2), n = 2; the paper's number only for exact rows
    assert (
        "| ViT-S/16 (optim.lr=0.0001) | none | 81.00 ± 1.41 (n=2) | - | 224 | 3 | 10000 | 0/1 | - |" in table1
    )
    assert "| ViT-S/16 (optim.lr=0.001) | none | 50.00 | - | 224 | 3 | 10000 | 0 | - |" in table1
    assert "| I-ViT-S/16 | vit | 83.00 | 81.52 | 224 | 3 | 10000 | 0 | - |" in table1
    assert "not the paper's LLaVA-1.5" in table1 and "Dataset: TinyImageNet" in table1
    # the I-ViT-L run also fills its Table 3 row, with the paper's 91.1
    assert "| IQ + IC + GC (✓, ✓, ✓), L/16 | vit | 90.00 | 91.10 |" in text.split("### Table 3.")[1]
    table4 = text.split("### Table 4.")[1].split("###")[0]
    assert "| I-ViT-L/16 | llava | 33.00 | 31.90 | 224 | 3 | 2344 | 0 | - |" in table4
    assert (
        "LLaVA-1.5 (the paper's VLM teacher)" in table4 and "trained on art_painting, photo, sketch" in table4
    )
    table6 = text.split("### Table 6.")[1].split("###")[0]
    assert (
        "| detection w/ C_VLM, DETR-R50 | llava | 43.60 | 43.60 | 480-800, max 1333 | 3 | - | 0 | - |"
        in table6
    )
    assert "| detection w/o C_VLM, DETR-R50 | none | 42.00 | 42.00 |" in table6
    table7 = text.split("### Table 7.")[1]
    assert "| w/ C_VLM, Conditional-DETR-R50 | llava | 40.00 | - | 30.00 | 50.00 | 40.90 | 4.90 |" in table7
    assert "COCO 2017, 10% of train" in table7
    # Table 1's runs with a metrics.csv get a convergence figure, linked relative to the report
    assert "![convergence of these runs](figures/report_table1_convergence.png)" in table1
    assert (out.parent / "figures" / "report_table1_convergence.png").stat().st_size > 1000
    assert "figures/table4" not in text  # no metrics.csv, no figure


def test_report_of_a_trained_run(trained_run: Path, tmp_path: Path) -> None:
    """The folder `train` wrote: synthetic data lands in 'other', one column per test set."""
    text = build_report([trained_run], tmp_path / "r.md")
    other = text.split("### Other runs")[1]
    assert "| row | teacher | id (ours) | ood (ours) | img | epochs | n | seeds | #params |" in other
    with safe_open(str(trained_run / "model.safetensors"), framework="pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    row = next(line for line in other.splitlines() if line.startswith("| I-ViT-Ti/8 | oracle |"))
    assert row.endswith(f"| 32 | 2 | 16 | 0 | {params / 1e3:.1f}k |")
    assert "![convergence of these runs](figures/r_tableother_convergence.png)" in other


def test_mean_std_counts_the_defined_values() -> None:
    assert mean_std([80.0, 82.0, float("nan")]) == "81.00 ± 1.41 (n=2)"
    assert mean_std([80.0]) == "80.00" and mean_std([float("nan")]) == "-"


def test_report_cli_one_table_and_errors(runs: list[Path], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["report", *map(str, runs[:4]), "--out", str(tmp_path / "r.md")])
    assert args.func(args) == 0
    text = (tmp_path / "r.md").read_text()
    assert "### Table 1." in text and "### Table" not in text.split("### Table 1.")[1]  # only Table 1
    (runs[0] / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        place(load_run(runs[0]))
    several = write_run(tmp_path / "more", _classification("t1/two_sets", "vit_small_patch16_224", "vit"),
                        {"a": {"acc1": 1.0}, "b": {"acc1": 2.0}})  # fmt: skip
    entry = place(load_run(several))  # several test sets, none 'val' (the shortcut test): one column each
    assert entry.table == "other" and entry.values == {"a": 1.0, "b": 2.0}


def test_reruns_of_a_seed_are_not_more_seeds(tmp_path: Path) -> None:
    """Issue 33 item 5: seed 0 run twice (80, 82) and seed 1 once (90): two seeds, 81 and 90, not n=3."""
    r = tmp_path / "runs"
    vit_s = "vit_small_patch16_224"
    runs = [
        write_run(r, _classification("a", vit_s, "vit", seed=0), _top1(80.0)),
        write_run(r, _classification("b", vit_s, "vit", seed=0), _top1(82.0)),
        write_run(r, _classification("c", vit_s, "vit", seed=1), _top1(90.0)),
    ]
    text = build_report(runs, tmp_path / "r.md")
    assert "| ViT-S/16 | none | 85.50 ± 6.36 (n=2) | 79.94 | 224 | 3 | 10000 | 0/1 (3 runs) | - |" in text


def _own(name: str, **data: Any) -> dict[str, Any]:
    return {"experiment": name, "model": {"name": "vit_small_patch16_224"}, "data": data}


def test_every_evaluation_of_a_run_is_read(tmp_path: Path) -> None:
    """A second `lfi eval` on new test folders adds its columns; the first evaluation's stay."""
    from lfi.train.runs import add_evaluation

    run = write_run(tmp_path, _own("own", dataset="imagefolder", train_dir="photos/train"), _top1(70.0, n=6))
    for name, acc in (("sketch", 40.0), ("cartoon", 55.0)):
        evaluation = {
            "run": str(run),
            "overrides": [f"data.test_dirs={{{name}: x}}"],
            "test": {name: {"acc1": acc, "n": 6}},
        }
        (run / "eval_metrics.json").write_text(
            json.dumps(add_evaluation(run / "eval_metrics.json", evaluation))
        )
    saved = json.loads((run / "eval_metrics.json").read_text())
    assert len(saved["evaluations"]) == 2 and set(saved["test"]) == {"sketch", "cartoon"}
    entry = place(load_run(run))
    assert entry.values == {"val": 70.0, "sketch": 40.0, "cartoon": 55.0}
    assert entry.dataset == "class folders photos/train"  # your own data, by its path


def test_own_coco_format_data_is_named_by_its_path(tmp_path: Path) -> None:
    config = _detection(
        "own/coco", "vit", train_json="my_coco/annotations.json", val_json="my_coco/annotations.json"
    )
    text = build_report([write_run(tmp_path, config, _coco(0.1), column="val/mAP")], tmp_path / "r.md")
    assert "Dataset: COCO-format my_coco/annotations.json." in text and "COCO 2017" not in text


def test_folders_that_are_not_finished_runs_are_skipped_and_listed(runs: list[Path], tmp_path: Path) -> None:
    (runs[1] / "metrics.json").unlink()  # still training
    demo = tmp_path / "runs" / "demo"  # e.g. `lfi demo`'s folder of run folders
    demo.mkdir()
    with pytest.warns(UserWarning, match="skipped"):
        text = build_report([runs[0], runs[1], demo], tmp_path / "r.md")
    assert text.startswith("# lfi report\n\n1 runs.") and "| ViT-S/16 | none | 80.00 |" in text
    skipped = text.split("### Skipped folders (not finished runs)")[1]
    assert f"{runs[1]}: no metrics.json" in skipped and f"{demo}: no config.yaml" in skipped
    with pytest.raises(ValueError, match="no finished run folder"), pytest.warns(UserWarning):
        build_report([demo], tmp_path / "r2.md")
