"""Drills (issue 32.5): every number of the config schema has an upper bound, and run folders stay under the
working directory or $LFI_RUNS_ROOT unless output_dir_allow_outside is set; each refusal is one line naming
the key, the value and the range (or the roots)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from lfi.config import RANGES, Config, ConfigError, load_config


def _numeric_fields(cls: type = Config, prefix: str = "") -> list[str]:
    """Dotted names of every int or float field (optional or not) of the schema; lists (data.scales,
    optim.betas) have their own checks, tested in test_huge_numbers_are_refused... and test_config.py."""
    names = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            names += _numeric_fields(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is not list and {int, float} & ({hint} | set(typing.get_args(hint))):
            names.append(f"{prefix}{f.name}")
    return names


def test_every_numeric_setting_has_an_upper_bound():
    fields = _numeric_fields()
    assert "optim.lr" in fields and "data.num_workers" in fields and "loss.kd.temperature" in fields
    assert sorted(set(fields) - set(RANGES)) == []  # a new number must get a range too


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=1e300", "'optim.lr' must be in (0, 1], got 1e+300"),
        ("loss.align_weight=1e308", "'loss.align_weight' must be in [0, 1000], got 1e+308"),
        ("data.num_workers=10000", "'data.num_workers' must be in [0, "),
        ("trainer.max_epochs=10000000", "'trainer.max_epochs' must be in [1, 100000], got 10000000"),
        ("data.batch_size=100000000", "'data.batch_size' must be in [1, 65536]"),
        ("data.img_size=100000", "'data.img_size' must be in [1, 4096]"),
        ("seed=99999999999", "'seed' must be in [0, 4294967295]"),
        ("data.scales=[480, 100000]", "'data.scales' must be a non-empty list of sizes in [1, 8192]"),
    ],
)
def test_huge_numbers_are_refused_naming_key_value_and_range(override: str, message: str):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("experiment", [".", "./", "a/../..", "../x", "/tmp/x", ""])
def test_experiment_must_name_a_folder_below_output_dir(experiment: str):
    with pytest.raises(ConfigError, match="'experiment' must be a relative name inside output_dir"):
        load_config(None, [f"experiment={experiment}"] if experiment else ["experiment=''"])


@pytest.mark.parametrize("output_dir", ["../../x", "/tmp/lfi-elsewhere", "runs/../../x"])
def test_output_dir_outside_the_roots_is_refused_unless_allowed(output_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LFI_RUNS_ROOT", raising=False)
    with pytest.raises(ConfigError, match=rf"'output_dir' '{output_dir}' is outside {tmp_path}"):
        load_config(None, [f"output_dir={output_dir}"])
    cfg = load_config(None, [f"output_dir={output_dir}", "output_dir_allow_outside=true"])
    assert cfg.output_dir == output_dir


def test_output_dir_inside_a_root_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LFI_RUNS_ROOT", raising=False)
    for inside in ("runs", ".", "runs/../other", str(tmp_path / "deep" / "runs")):
        assert load_config(None, [f"output_dir={inside}"]).output_dir == inside
    monkeypatch.setenv("LFI_RUNS_ROOT", str(tmp_path.parent / "scratch"))
    assert load_config(None, [f"output_dir={tmp_path.parent / 'scratch' / 'runs'}"])


def test_cli_refuses_an_escaping_output_dir_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from lfi.cli import main

    work = tmp_path / "work"
    work.mkdir()
    (work / "exp.yaml").write_text("experiment: x\n")
    monkeypatch.chdir(work)
    monkeypatch.delenv("LFI_RUNS_ROOT", raising=False)
    assert main(["train", "exp.yaml", "output_dir=../escaped"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'output_dir' '../escaped' is outside" in err and err.count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_a_finished_run_is_read_wherever_it_lies(tmp_path, monkeypatch):
    """The roots bound where runs are written, not where `lfi report` / `lfi eval` read them from."""
    from lfi.config import save_config
    from lfi.train.runs import load_run

    scratch = tmp_path / "scratch"
    monkeypatch.setenv("LFI_RUNS_ROOT", str(scratch))
    cfg = load_config(None, [f"output_dir={scratch / 'runs'}", "experiment=x"])
    cfg.run_dir.mkdir(parents=True)
    save_config(cfg, cfg.run_dir / "config.yaml")
    monkeypatch.delenv("LFI_RUNS_ROOT")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="'output_dir'"):
        load_config(cfg.run_dir / "config.yaml")
    assert load_run(cfg.run_dir).cfg.output_dir == str(scratch / "runs")
