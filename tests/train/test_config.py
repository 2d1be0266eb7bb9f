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
    for table in (
        "table2",
        "table4",
        "table5",
    ):  # a base per row, swept over the column (configs/<table>/README.md)
        assert {f"{table}/vit_l", f"{table}/ivit_l"} <= names


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.min_lr_ratio=-2", "'optim.min_lr_ratio' must be in [0, 1]"),
        ("optim.warmup_epochs=-1", "'optim.warmup_epochs' must be in [0, 100000]"),
        ("data.num_workers=-3", "'data.num_workers' must be in [0, "),
        ("data.img_size=0", "'data.img_size' must be in [1, 4096]"),
        ("optim.betas=[0.9, 1.5]", "'optim.betas' must be two numbers in [0, 1)"),
        ("optim.lr=.inf", "'optim.lr' must be in (0, 1]"),
        ("data.val_fraction=1", "'data.val_fraction' must be in [0, 1)"),
        ("loss.direction=sideways", "'loss.direction' must be one of"),
        ("experiment=../../x", "'experiment' must be a relative name inside output_dir"),
        ("experiment=/tmp/x", "'experiment' must be a relative name inside output_dir"),
        ("teacher.name=vit", "reads no maps; set teacher.name=none"),
        ("task=detection", "'model.name' must be one of ('detr', 'conditional_detr')"),
    ],
)
def test_every_number_and_choice_is_checked(override: str, message: str):
    """Issue 17 item 7: out-of-range numbers, bad choices and run folders outside output_dir are refused, the
    error naming the key."""
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_timm_kwargs_are_checked_against_the_model():
    from lfi.train.build import build_model

    cfg = load_config(
        None,
        [
            "model.name=vit_tiny_patch16_224",
            "data.img_size=32",
            "model.timm_kwargs={depth: 1, patch_size: 8, colour: red}",
        ],
    )
    with pytest.raises(ConfigError, match="model.timm_kwargs"):
        build_model(cfg, 3)
    cfg = load_config(
        None, ["model.name=vit_tiny_patch16_224", "data.img_size=32", "model.timm_kwargs={img_size: 64}"]
    )
    with pytest.raises(ConfigError, match="data.img_size"):
        build_model(cfg, 3)
    cfg = load_config(
        None,
        [
            "model.name=vit_tiny_patch16_224",
            "data.img_size=48",
            "model.timm_kwargs={depth: 1, patch_size: 16}",
        ],
    )
    assert build_model(cfg, 3).patch_grid((48, 48)) == (3, 3)  # the input size comes from data.img_size


def test_cli_errors_are_one_line_naming_the_key(capsys):
    from lfi.cli import main

    assert main(["train", str(REPO / "configs/table1/ivit_s.yaml"), "optim.min_lr_ratio=-2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "optim.min_lr_ratio" in err and "--debug" in err


def test_img_size_not_a_multiple_of_the_patch_is_refused():
    """Issue 33 item 1: 60 px with 16 px patches would silently drop 36% of each image."""
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.name=vit_tiny_patch16_224", "data.img_size=60"])
    message = str(error.value)
    assert "'data.img_size'=60" in message and "patch size 16" in message and "48 or 64" in message
    with pytest.raises(ConfigError, match="patch size 8; use 56 or 64"):
        load_config(
            None, ["model.name=vit_tiny_patch16_224", "data.img_size=60", "model.timm_kwargs={patch_size: 8}"]
        )
    assert load_config(
        None, ["model.name=vit_tiny_patch16_224", "data.img_size=60", "model.timm_kwargs={patch_size: 6}"]
    )


def test_img_size_is_checked_against_the_built_model():
    """A timm name without 'patchN' is checked at build, against the model's own patch embedding."""
    from lfi.train.build import build_model

    cfg = load_config(
        None, ["model.name=vit_tiny_patch16_224", "data.img_size=48", "model.timm_kwargs={depth: 1}"]
    )
    cfg.data.img_size = 40  # as if the name had not told the patch size
    with pytest.raises(
        ConfigError, match="'data.img_size'=40 is not a multiple of the model's patch size 16; use 32 or 48"
    ):
        build_model(cfg, 3)


def test_img_size_is_refused_for_detection_with_the_keys_it_uses():
    """Issue 33 item 3: detection ignored data.img_size (the README's CPU advice reached 13 GB)."""
    detr = ["task=detection", "model.name=detr", "data.dataset=coco"]
    with pytest.raises(
        ConfigError, match=r"'data.img_size' is for classification; detection resizes .* 'data.scales'"
    ):
        load_config(None, [*detr, "data.img_size=64"])
    assert load_config(None, [*detr, "data.scales=[256]", "data.max_size=384"]).data.max_size == 384
