"""Config loading: defaults, YAML bases, dotted overrides, errors that name the key; every paper row loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfi.config import ConfigError, load_config, parse_overrides, save_config

REPO = Path(__file__).resolve().parents[2]
CLASSIFICATION = ("table1", "table2", "table3", "table4", "table5", "baselines")
ROWS = sorted(p for d in CLASSIFICATION for p in (REPO / "configs" / d).glob("*.yaml"))


def test_overrides_parse_yaml_values():
    tree = parse_overrides(
        ["trainer.max_epochs=3", "optim.lr=0.001", "model.checkpoint=null", "data.test_domains=[a, b]"]
    )
    assert tree == {
        "trainer": {"max_epochs": 3},
        "optim": {"lr": 1e-3},
        "model": {"checkpoint": None},
        "data": {"test_domains": ["a", "b"]},
    }
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string


def test_row_with_overrides(tmp_path: Path):
    cfg = load_config(
        REPO / "configs/table1/ivit_s.yaml", ["trainer.max_epochs=3", "model.name=vit_tiny_patch16_224"]
    )
    assert cfg.trainer.max_epochs == 3 and cfg.model.name == "vit_tiny_patch16_224"
    assert cfg.teacher.name == "llava" and cfg.model.freeze_backbone  # from the row and its bases
    assert cfg.data.dataset == "tinyimagenet" and cfg.trainer.precision == "bf16-mixed"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("path", ROWS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_paper_row_loads(path: Path):
    cfg = load_config(path)
    assert cfg.paper_row and cfg.experiment == f"{path.parent.name}/{path.stem}"
    assert cfg.teacher.name in ("llava", "none")  # the paper's teacher; substitutes only by override


def test_rows_cover_the_tables():
    names = {f"{p.parent.name}/{p.stem}" for p in ROWS}
    assert {f"table1/{m}_{s}" for m in ("vit", "ivit") for s in "sbl"} <= names
    assert {f"table3/{r}" for r in ("vit", "iq_gc", "ic_original", "iq_ic", "iq_ic_gc")} <= names
    assert len([n for n in names if n.startswith("table2/")]) == 8
    assert len([n for n in names if n.startswith("table4/")]) == 8
    assert len([n for n in names if n.startswith("table5/")]) == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch'"),
        ("model.variant=foo", "'model.variant' must be one of"),
        ("optim.lr=fast", "'optim.lr' must be float"),
        ("data.batch_size=1.5", "'data.batch_size' must be int"),
        ("trainer=3", "'trainer' must be a mapping"),
        ("model.checkpoint=null", "'model.freeze_backbone' is true but 'model.checkpoint' is null"),
        ("teacher.name=none", "set 'teacher.name'"),
        ("max_epochs", "must look like section.key=value"),
    ],
)
def test_errors_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(REPO / "configs/table1/ivit_s.yaml", [override])


def test_missing_file_and_base_loop(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")
