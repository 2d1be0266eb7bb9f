"""`lfi report` from small run folders written in the format of `lfi.train.run` and `lfi.train.detection`."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import yaml

from lfi.evaluate.classification import write_metrics
from lfi.show.report import build_report, load_run, register
from lfi.train.config import load_config, save_config

REPO = Path(__file__).resolve().parents[2]


def _classification_run(
    root: Path, config: str, overrides: list[str], tests: dict[str, float], epochs: list[float] | None = None
) -> Path:
    """A run folder as `lfi.train.run.train` leaves it: config.yaml, metrics.json, logs/metrics.csv."""
    cfg = load_config(REPO / "configs" / config, [f"output_dir={root}", *overrides])
    run = cfg.run_dir
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    metrics = {
        "experiment": cfg.experiment, "paper_row": cfg.paper_row, "teacher": cfg.teacher.name,
        "variant": cfg.model.variant, "kd_weight": cfg.loss.kd.weight, "epochs": 3, "global_step": 30,
        "best_val_acc1": max(tests.values()), "train_seconds": 1.0, "eval_seconds": 0.5,
        "test": {name: {"acc1": acc, "acc5": 99.0, "n": 100} for name, acc in tests.items()},
    }  # fmt: skip
    write_metrics(metrics, run / "metrics.json")
    if epochs:
        (run / "logs").mkdir()
        with (run / "logs" / "metrics.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["epoch", "step", "train/task_epoch", "val/acc1", "val/acc5"])
            for e, acc in enumerate(epochs):
                writer.writerow([e, 10 * e, "", acc, 1.0])
                writer.writerow([e, 10 * e, 1.5, "", ""])
    return run


def _detection_run(root: Path, name: str, teacher: str, mAP: float, arch: str = "detr") -> Path:
    run = root / name
    run.mkdir(parents=True)
    cfg = {
        "task": "detection", "arch": arch, "data": {"dataset": "coco", "fraction": 1.0, "seed": 0},
        "model": {"size": "r50", "constraint": "none" if teacher == "none" else "interaction"},
        "teacher": {"name": "none" if teacher == "none" else "store", "teacher": teacher}, "output": str(run),
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    stats = {"mAP": mAP, "AP50": 0.6, "AP75": 0.4, "AP_S": 0.1, "AP_M": 0.3, "AP_L": 0.5}
    (run / "metrics.json").write_text(json.dumps({"metrics": stats, "train_seconds": 1.0, "steps": 2}))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    r = tmp_path / "runs"
    vit = "table1/vit_s.yaml"
    ivit = "table1/ivit_s.yaml"
    teacher = ["teacher.name=vit", "teacher.store=stores/x"]
    return [
        _classification_run(r, vit, ["seed=0", "experiment=t1/vit_s0"], {"val": 80.0}, [0.5, 0.7, 0.8]),
        _classification_run(r, vit, ["seed=1", "experiment=t1/vit_s1"], {"val": 82.0}, [0.4, 0.6, 0.82]),
        _classification_run(r, ivit, ["experiment=t1/ivit_s", *teacher], {"val": 83.0}, [0.75, 0.8, 0.83]),
        # another learning rate: the same table cell, but not pooled with seed 0 / 1
        _classification_run(r, vit, ["experiment=t1/vit_lr", "optim.lr=0.001"], {"val": 50.0}),
        _classification_run(r, "table1/ivit_l.yaml", ["experiment=t1/ivit_l", *teacher], {"val": 90.0}),
        _classification_run(r, "table4/ivit_l_cartoon.yaml", ["teacher.store=s"], {"cartoon": 33.0}),
        _detection_run(r, "det_with", "llava", 0.436),
        _detection_run(r, "det_without", "none", 0.42),
    ]


def test_load_run_places_runs_by_their_config(runs: list[Path]) -> None:
    placed = [load_run(p) for p in runs]
    assert [(r.table, r.row) for r in placed] == [
        ("1", "ViT-S/16"), ("1", "ViT-S/16"), ("1", "I-ViT-S/16"), ("1", "ViT-S/16"), ("1", "I-ViT-L/16"),
        ("4", "I-ViT-L/16"), ("6", "detection w/ C_VLM, DETR-R50"), ("6", "detection w/o C_VLM, DETR-R50"),
    ]  # fmt: skip
    assert placed[0].teacher == "none" and placed[2].teacher == "vit" and placed[5].teacher == "llava"
    assert placed[5].values == {"cartoon": 33.0} and placed[6].values == {"mAP": pytest.approx(43.6)}


def test_report_tables_pool_seeds_name_teachers_and_show_the_paper(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.md"
    text = build_report(runs, out, threshold=0.8)
    assert out.read_text() == text
    table1 = text.split("### Table 1.")[1].split("###")[0]
    # seeds 0 and 1 pooled: mean 81, sample std sqrt(2); the paper's ViT-S/16 number beside it
    assert (
        "| ViT-S/16 (optim.lr=0.0001) | none | 81.00 ± 1.41 | 79.94 |" not in table1
    )  # paper only for exact rows
    assert "| ViT-S/16 (optim.lr=0.0001) | none | 81.00 ± 1.41 | - | 0, 1 |" in table1
    assert "| ViT-S/16 (optim.lr=0.001) | none | 50.00 | - | 0 |" in table1
    assert "| I-ViT-S/16 | vit | 83.00 | 81.52 | 0 |" in table1
    assert "not the paper's LLaVA-1.5" in table1 and "Dataset: TinyImageNet" in table1
    # the I-ViT-L run also fills its Table 3 row, with the paper's 91.1
    assert "| IQ + IC + GC (✓, ✓, ✓), L/16 | vit | 90.00 | 91.10 |" in text.split("### Table 3.")[1]
    table4 = text.split("### Table 4.")[1].split("###")[0]
    assert (
        "| I-ViT-L/16 | llava | 33.00 | 31.90 |" in table4 and "LLaVA-1.5 (the paper's VLM teacher)" in table4
    )
    table6 = text.split("### Table 6.")[1]
    assert "| detection w/ C_VLM, DETR-R50 | llava | 43.60 | 43.60 |" in table6
    assert "| detection w/o C_VLM, DETR-R50 | none | 42.00 | 42.00 |" in table6
    # Table 1's runs with logs get a convergence figure, linked relative to the report
    assert "![convergence of these runs](figures/table1_convergence.png)" in table1
    assert (out.parent / "figures" / "table1_convergence.png").stat().st_size > 1000
    assert "figures/table4" not in text  # no logs, no figure


def test_report_cli_and_missing_files(runs: list[Path], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["report", str(runs[2]), "--out", str(tmp_path / "r.md")])
    assert args.func(args) == 0 and "I-ViT-S/16" in (tmp_path / "r.md").read_text()
    (runs[0] / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        load_run(runs[0])
