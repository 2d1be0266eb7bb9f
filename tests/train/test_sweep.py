"""`lfi sweep`: grid expansion and run names, --set parsing, resumable runs (a fake runner stands in for
`lfi train`), the table and summary, the table configs with each swept value, and the command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import threading
from pathlib import Path

import pytest

from lfi.cli.sweep import register, split_positionals
from lfi.config import ConfigError, load_config, save_config
from lfi.show.sweep import sweep
from lfi.train.sweep import (
    SweepRun,
    parse_seeds,
    parse_set,
    parse_sets,
    plan,
    run_sweep,
    split_values,
    subprocess_runner,
    sweep_root,
)

REPO = Path(__file__).resolve().parents[2]
SAFE = re.compile(r"^[A-Za-z0-9._=/-]+$")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A small TinyImageNet row (nothing is trained: the fake runner writes the run folder)."""
    path = tmp_path / "row.yaml"
    path.write_text(
        f"experiment: grid/row\noutput_dir: {tmp_path / 'runs'}\n"
        "model: {name: vit_small_patch16_224, variant: vit}\ndata: {dataset: tinyimagenet}\n"
    )
    return path


def fake_train(acc: dict[int, float] | None = None, fail: set[str] = frozenset(), calls: list | None = None):
    """A runner that writes a finished run folder as `lfi train` does (config.yaml, metrics.json), or fails
    with exit code 3 for the experiments in `fail`; top-1 = acc[seed] (default 50 + seed)."""

    def runner(run: SweepRun, command: list[str], env: dict[str, str], log: Path) -> int:
        if calls is not None:
            calls.append((run.experiment, command, env.get("CUDA_VISIBLE_DEVICES")))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("fake\n")
        if run.experiment in fail:
            return 3
        cfg = load_config(run.config, run.overrides)
        save_config(cfg, cfg.run_dir / "config.yaml")
        top1 = (acc or {}).get(cfg.seed, 50.0 + cfg.seed)
        metrics = {"task": cfg.task, "seed": cfg.seed, "epochs": 2, "test": {"val": {"acc1": top1, "n": 100}}}
        (cfg.run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 0

    return runner


# --------------------------------------------------------------------------------------------- parsing


def test_values_split_on_commas_outside_brackets():
    assert split_values("0.1,0.5") == ["0.1", "0.5"]
    assert split_values("[a,b],[c]") == ["[a,b]", "[c]"]
    assert split_values("{x: [1, 2]}, 'a,b', 3") == ["{x: [1, 2]}", "'a,b'", "3"]
    with pytest.raises(ValueError, match="unbalanced"):
        split_values("[a,b")


def test_set_values_are_yaml():
    assert parse_set("data.ratio=0.01,0.1,1.0") == ("data.ratio", [0.01, 0.1, 1.0])
    assert parse_set("data.test_domains=[art_painting],[cartoon, photo]") == (
        "data.test_domains",
        [["art_painting"], ["cartoon", "photo"]],
    )
    assert parse_set("model.checkpoint=null,w.safetensors") == ("model.checkpoint", [None, "w.safetensors"])
    assert parse_sets(["a.b=1,2", "c=true"]) == {"a.b": [1, 2], "c": [True]}
    for bad in ("data.ratio", "=1", "data.ratio="):
        with pytest.raises(ConfigError, match="must look like"):
            parse_set(bad)
    with pytest.raises(ConfigError, match="twice"):
        parse_sets(["a=1", "a=2"])
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("0,x")


# ------------------------------------------------------------------------------------------------ plan


def test_plan_is_the_grid_times_the_seeds_with_safe_names(config: Path, tmp_path: Path):
    runs = plan(
        config, {"data.ratio": [0.1, 1.0], "optim.lr": [1e-3, "5e-4"]}, [0, 1], ["trainer.max_epochs=2"]
    )
    assert len(runs) == 8
    assert [r.experiment for r in runs[:3]] == [
        "grid/row/ratio=0.1__lr=0.001/seed0",
        "grid/row/ratio=0.1__lr=0.001/seed1",
        "grid/row/ratio=0.1__lr=5e-4/seed0",
    ]
    first = runs[0]
    assert first.overrides == [
        "trainer.max_epochs=2", "data.ratio=0.1", "optim.lr=0.001", "seed=0",
        "experiment=grid/row/ratio=0.1__lr=0.001/seed0",
    ]  # fmt: skip
    assert first.run_dir == tmp_path / "runs" / "grid/row/ratio=0.1__lr=0.001/seed0"
    assert first.command()[1:5] == ["-m", "lfi.cli", "train", str(config)] and "--resume" in first.command(
        True
    )
    for run in runs:  # each run's own config: its values, seed and folder
        cfg = load_config(run.config, run.overrides)
        assert (cfg.data.ratio, cfg.optim.lr, cfg.seed) == (
            run.point["data.ratio"],
            float(run.point["optim.lr"]),
            run.seed,
        )
        assert cfg.trainer.max_epochs == 2 and cfg.run_dir == run.run_dir and SAFE.match(run.experiment)
    assert sweep_root(runs) == tmp_path / "runs" / "grid/row"


def test_plan_names_lists_and_ambiguous_keys(config: Path):
    runs = plan(config, {"model.checkpoint": [None], "loss.kd.checkpoint": [None, "a b/c.pt"]}, [3])
    assert [r.experiment for r in runs] == [
        "grid/row/model.checkpoint=null__loss.kd.checkpoint=null/seed3",
        "grid/row/model.checkpoint=null__loss.kd.checkpoint=a_b_c.pt/seed3",
    ]
    (run,) = plan(config, {"data.test_domains": [["art_painting", "photo"]]}, [0])
    assert run.experiment == "grid/row/test_domains=art_painting-photo/seed0"
    assert load_config(run.config, run.overrides).data.test_domains == ["art_painting", "photo"]
    (run,) = plan(config, {}, [])  # no grid, no seeds: the config's seed
    assert run.experiment == "grid/row/seed0" and sweep_root([run]) == run.run_dir.parent


def test_plan_refuses_bad_sweeps(config: Path):
    with pytest.raises(ConfigError, match="--seeds"):
        plan(config, {"seed": [0, 1]})
    with pytest.raises(ConfigError, match="no values"):
        plan(config, {"data.ratio": []})
    with pytest.raises(ConfigError, match="same run folder name"):
        plan(config, {"model.name": ["a/b", "a_b"]})
    with pytest.raises(ConfigError, match="'data.ratio' must be"):  # every run validated before any starts
        plan(config, {"data.ratio": [0.5, 2.0]})


def test_plan_of_two_configs_shares_a_root(config: Path, tmp_path: Path):
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("grid/row", "grid/other"))
    runs = plan([config, other], {"data.ratio": [0.5]}, [0, 1])
    assert [r.experiment for r in runs] == [
        "grid/row/ratio=0.5/seed0", "grid/row/ratio=0.5/seed1",
        "grid/other/ratio=0.5/seed0", "grid/other/ratio=0.5/seed1",
    ]  # fmt: skip
    assert sweep_root(runs) == tmp_path / "runs" / "grid"
    with pytest.raises(ConfigError, match="share a run folder"):
        plan([config, config], {}, [0])


# ------------------------------------------------------------------------------------------------- run


def test_run_sweep_skips_finished_runs_resumes_checkpointed_ones_and_reports_failures(config: Path):
    runs = plan(config, {"data.ratio": [0.25, 0.5, 1.0]}, [0])
    done, ckpt, bad = runs
    fake_train()(done, [], {}, done.log)  # finished before the sweep
    (ckpt.run_dir / "checkpoints").mkdir(parents=True)
    (ckpt.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    calls: list = []
    lines: list[str] = []
    statuses = run_sweep(
        runs, jobs=1, runner=fake_train(fail={bad.experiment}, calls=calls), echo=lines.append
    )
    assert [(s.status, s.returncode, s.resumed) for s in statuses] == [
        ("skipped", None, False), ("ok", 0, True), ("failed", 3, False),
    ]  # fmt: skip
    assert [c[0] for c in calls] == [ckpt.experiment, bad.experiment]
    assert calls[0][1][-1] == "--resume" and "--resume" not in calls[1][1]
    assert bad.log.read_text() == "fake\n" and any("failed" in line and "train.log" in line for line in lines)
    # run again: the finished ones are skipped, the failed one is retried (and now succeeds)
    calls.clear()
    statuses = run_sweep(runs, jobs=2, runner=fake_train(calls=calls), echo=None)
    assert [s.status for s in statuses] == ["skipped", "skipped", "ok"] and [c[0] for c in calls] == [
        bad.experiment
    ]


def test_jobs_run_at_once_on_their_devices(config: Path):
    runs = plan(config, {"data.ratio": [0.25, 0.5, 0.75, 1.0]}, [0])
    together = threading.Barrier(2, timeout=10)  # the first two runs must be in flight at the same time
    calls: list = []
    inner = fake_train(calls=calls)

    def runner(run: SweepRun, command: list[str], env: dict[str, str], log: Path) -> int:
        if len(calls) < 2:
            calls.append(None)
            together.wait()
            calls.remove(None)
        return inner(run, command, env, log)

    statuses = run_sweep(runs, jobs=2, devices=["0", "1"], runner=runner, echo=None)
    assert [s.status for s in statuses] == ["ok"] * 4
    # which slot takes the later runs depends on which finishes first: only that both devices were used
    assert len(calls) == 4 and {c[2] for c in calls} == {"0", "1"}
    assert {s.device for s in statuses} == {"0", "1"}
    with pytest.raises(ValueError, match="jobs"):
        run_sweep(runs, jobs=0)


def test_subprocess_runner_logs_and_returns_the_exit_code(config: Path):
    (run,) = plan(config, {}, [0])
    code = subprocess_runner(
        run, [sys.executable, "-c", "print('hello'); raise SystemExit(3)"], dict(os.environ), run.log
    )
    assert code == 3 and "hello" in run.log.read_text()


def test_sweep_writes_the_table_and_summary(config: Path, tmp_path: Path):
    runs = plan(config, {"data.ratio": [1.0]}, [0, 1, 2])
    result = sweep(runs, jobs=2, runner=fake_train({0: 40.0, 1: 42.0, 2: 44.0}), echo=None)
    root = tmp_path / "runs" / "grid" / "row"
    assert (
        result.root == root and result.report == root / "sweep.md" and result.summary == root / "sweep.json"
    )
    table = result.report.read_text()
    assert "| ViT-S/16 |" in table and "42.00 ± 2.00 (n=3)" in table and "| 0/1/2 |" in table  # seeds pooled
    summary = json.loads(result.summary.read_text())
    assert summary["counts"] == {"ok": 3, "failed": 0, "skipped": 0} and summary["wall_s"] >= 0
    assert [p["experiment"] for p in summary["plan"]] == [r.experiment for r in runs]
    assert [s["status"] for s in summary["statuses"]] == ["ok"] * 3 and summary["report"] == str(
        result.report
    )


# ------------------------------------------------------------------------------------- the table configs


def readme_command(table: str) -> list[str]:
    """The one `lfi sweep` command of configs/<table>/README.md, as argv (after `lfi`)."""
    (line,) = [
        ln.strip()
        for ln in (REPO / "configs" / table / "README.md").read_text().splitlines()
        if "lfi sweep" in ln
    ]
    return shlex.split(line)[1:]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lfi")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("table", "key", "values"),
    [
        ("table2", "data.ratio", [0.01, 0.1, 0.5, 1.0]),
        ("table4", "data.test_domains", [["art_painting"], ["cartoon"], ["photo"], ["sketch"]]),
        ("table5", "data.test_domains", [["CALTECH"], ["LABELME"], ["PASCAL"], ["SUN"]]),
    ],
)
def test_table_sweeps_load_with_each_value(table: str, key: str, values: list, capsys: pytest.CaptureFixture):
    argv = readme_command(table)
    assert argv[0] == "sweep"
    files = sorted((REPO / "configs" / table).glob("*.yaml"))
    assert [p.name for p in files] == ["ivit_l.yaml", "vit_l.yaml"]  # a base per row, no file per value
    for path in files:  # each config's comment gives the same command
        assert shlex.join(["lfi", *argv]) in path.read_text()
        for value in values:
            cfg = load_config(path, [f"{key}={json.dumps(value)}"])
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value
            assert cfg.paper_row and cfg.teacher.name in ("llava", "none")
    args = parse(argv)
    configs, overrides = split_positionals(args.items)
    runs = plan(configs, parse_sets(args.set), parse_seeds(args.seeds), overrides)
    assert len(runs) == 2 * len(values) * 3
    assert [r.point[key] for r in runs[::3][: len(values)]] == values
    assert sweep_root(runs) == Path("runs") / table
    assert {r.experiment.split("/")[1] for r in runs} == {"vit_l", "ivit_l"}
    assert parse([*argv, "--dry-run"]).func(parse([*argv, "--dry-run"])) == 0
    assert f"{len(runs)} runs; table and summary: runs/{table}/sweep.md" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- cli


def test_cli_parses():
    args = parse(
        ["sweep", "a.yaml", "b.yaml", "trainer.max_epochs=2", "--set", "data.ratio=0.1,1.0",
         "--set", "data.test_domains=[a,b],[c]", "--seeds", "0,1", "--jobs", "4", "--devices", "0,1", "--dry-run"]
    )  # fmt: skip
    assert split_positionals(args.items) == (["a.yaml", "b.yaml"], ["trainer.max_epochs=2"])
    assert parse_sets(args.set) == {"data.ratio": [0.1, 1.0], "data.test_domains": [["a", "b"], ["c"]]}
    assert (args.seeds, args.jobs, args.devices, args.dry_run) == ("0,1", 4, "0,1", True)
    with pytest.raises(ValueError, match="before"):
        split_positionals(["a.yaml", "x=1", "b.yaml"])
