"""`lfi study`: rows tuned on the held-out split, the best point chosen, seeds run; controls copy the choice.
A fake runner stands in for `lfi train` (it writes metrics.csv with a val score that depends on the point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lfi.config import ConfigError, load_config, save_config
from lfi.show.stats import welch
from lfi.show.study import at_edge, study_markdown, welch_cells
from lfi.train.study import read_study, run_study
from lfi.train.sweep import SweepRun


def _val_score(cfg) -> float:
    """Val top-1 of a fake run: best at lr 1e-3 for every row; the control row scores lower on test only."""
    return 60.0 - abs(cfg.optim.lr - 1e-3) * 1e4 + cfg.loss.align_weight


def fake_train(calls: list):
    def runner(run: SweepRun, command: list[str], env: dict[str, str], log: Path) -> int:
        calls.append(run.experiment)
        cfg = load_config(run.config, run.overrides)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        log.write_text("fake\n")
        save_config(cfg, cfg.run_dir / "config.yaml")
        val = _val_score(cfg)
        (cfg.run_dir / "metrics.csv").write_text(f"epoch,val/acc1\n0,{val - 5}\n1,{val}\n")
        test = val - 10 * (cfg.teacher.control != "none") + 0.1 * cfg.seed
        metrics = {"task": cfg.task, "seed": cfg.seed, "epochs": 2, "test": {"val": {"acc1": test, "n": 10}}}
        (cfg.run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 0

    return runner


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(
        f"experiment: x\noutput_dir: {tmp_path / 'runs'}\n"
        "model: {name: vit_small_patch16_224, variant: vit}\ndata: {dataset: tinyimagenet}\n"
    )
    aligned = "{model.variant: iq_ic_gc, teacher.name: oracle, teacher.store: s}"
    (tmp_path / "study.yaml").write_text(
        "name: demo_study\nseeds: [0, 1, 2]\nrows:\n"
        "  probe: {config: base.yaml, tune: {optim.lr: [3.0e-4, 1.0e-3, 3.0e-3]}}\n"
        f"  ivit: {{config: base.yaml, set: {aligned}, tune: {{optim.lr: [1.0e-3, 3.0e-3], loss.align_weight: [0.5, 2.0]}}}}\n"
        f"  shuffled: {{config: base.yaml, set: {{teacher.control: shuffled, model.variant: iq_ic_gc, teacher.name: oracle, teacher.store: s}}, like: ivit}}\n"
    )  # fmt: skip
    return tmp_path / "study.yaml"


def test_rows_are_tuned_on_val_then_run_over_seeds(study_file: Path, tmp_path: Path) -> None:
    calls: list[str] = []
    result = run_study(read_study(study_file), jobs=2, runner=fake_train(calls), echo=None)
    rows = result["rows"]
    assert rows["probe"]["chosen"] == {"optim.lr": 1e-3}
    assert rows["ivit"]["chosen"] == {"optim.lr": 1e-3, "loss.align_weight": 2.0}
    assert rows["shuffled"]["chosen"] == rows["ivit"]["chosen"]  # the control runs with the method's choice
    assert len(rows["ivit"]["grid"]) == 4 and all(g["score"] is not None for g in rows["ivit"]["grid"])
    # 3 + 4 tuning runs, then seeds 1, 2 of each tuned row and all three seeds of the control
    assert len(calls) == 7 + 2 + 2 + 3
    for name in rows:
        seeds = sorted(load_config(Path(d) / "config.yaml").seed for d in rows[name]["runs"])
        assert seeds == [0, 1, 2]
    shuffled = [load_config(Path(d) / "config.yaml") for d in rows["shuffled"]["runs"]]
    assert {(c.teacher.control, c.loss.align_weight) for c in shuffled} == {("shuffled", 2.0)}

    again: list[str] = []
    run_study(read_study(study_file), runner=fake_train(again), echo=None)
    assert again == []  # resumable: every finished run is skipped

    text = study_markdown(json.loads((tmp_path / "runs" / "demo_study" / "study.json").read_text()), "ivit")
    assert "**lr=0.001, align_weight=2.0: 62.00**" in text
    assert "| shuffled | oracle | shuffled | lr=0.001, align_weight=2.0 |" in text
    assert "-10.00" in text  # the control's test drop is outside the seeds' spread


def test_only_runs_the_rows_named(study_file: Path) -> None:
    calls: list[str] = []
    result = run_study(read_study(study_file), only=["probe"], runner=fake_train(calls), echo=None)
    assert set(result["rows"]) == {"probe"} and all(c.startswith("demo_study/probe/") for c in calls)


def test_welch_holm_cells() -> None:
    strong = ([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    cells = welch_cells([([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]), strong, ([1.0], [2.0, 3.0])])
    assert cells[0].startswith("no difference shown (Δ -0.50")
    p = welch(*strong).p
    assert cells[1].startswith("+9.00 (Δ +9.00") and f"Holm {2 * p:.2g})" in cells[1]  # a family of two
    assert cells[2] == "n < 2"  # not testable, and not counted in Holm's family
    assert f"Holm {p:.2g})" in welch_cells([strong])[0]


def test_choice_at_the_edge_of_its_grid() -> None:
    grid = {"optim.lr": [5e-4, 1e-3, 2e-3], "loss.align_weight": [1.0, 3.0], "model.variant": ["a", "b"]}
    assert at_edge(grid, {"optim.lr": 1e-3, "loss.align_weight": 3.0, "model.variant": "a"}) == [
        "loss.align_weight"
    ]
    assert at_edge(grid, {"optim.lr": 5e-4, "loss.align_weight": 1.0}) == ["optim.lr", "loss.align_weight"]
    assert at_edge({"optim.lr": [1e-3]}, {"optim.lr": 1e-3}) == []  # a one-point grid has no inside


def test_claims_are_tested(study_file: Path, tmp_path: Path) -> None:
    body = study_file.read_text().replace(
        "rows:\n", "claims:\n  - {claim: the maps are why, row: ivit, against: shuffled}\nrows:\n", 1
    )
    study_file.write_text(body)
    result = run_study(read_study(study_file), jobs=2, runner=fake_train([]), echo=None)
    text = study_markdown(result)
    assert "## Claims" in text
    assert "| the maps are why | ivit | shuffled | val |" in text and "+10.00 (Δ +10.00" in text


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ("claims: {a: 1}\n", "'claims' must be a list"),
        ("claims:\n  - {claim: x, row: ivit}\n", "claims\\[0\\] must be a mapping with exactly"),
        ("claims:\n  - {claim: x, row: ivit, against: nope}\n", "claims\\[0\\].against='nope' is not a row"),
    ],
)
def test_bad_claims_are_named(study_file: Path, claims: str, message: str) -> None:
    study_file.write_text(study_file.read_text().replace("rows:\n", claims + "rows:\n", 1))
    with pytest.raises(ConfigError, match=message):
        read_study(study_file)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rows: {}\n", "no rows"),
        ("rows:\n  a: {config: base.yaml, like: b}\n", "must name a row"),
        ("rows:\n  a: {config: base.yaml, tune: {optim.lr: []}}\n", "non-empty list"),
        ("rows:\n  a: {config: base.yaml, grid: {}}\n", "unknown keys"),
        ("seeds: [0, 0]\nrows:\n  a: {config: base.yaml}\n", "distinct"),
    ],
)
def test_bad_study_files_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        read_study(path)


def test_report_only_trains_nothing(study_file: Path) -> None:
    calls: list[str] = []
    result = run_study(read_study(study_file), runner=fake_train(calls), echo=None, train=False)
    assert calls == [] and result["rows"]["probe"]["chosen"] is None


def test_only_a_control_tunes_the_row_it_copies(study_file: Path) -> None:
    calls: list[str] = []
    result = run_study(read_study(study_file), only=["shuffled"], runner=fake_train(calls), echo=None)
    assert set(result["rows"]) == {"shuffled"}
    assert result["rows"]["shuffled"]["chosen"] == {"optim.lr": 1e-3, "loss.align_weight": 2.0}
    tuned = [c for c in calls if c.startswith("demo_study/ivit/tune/")]
    assert len(tuned) == 4 and not any(
        c.startswith("demo_study/ivit/seed") for c in calls
    )  # no seeds of ivit
    assert sorted(c for c in calls if c.startswith("demo_study/shuffled/")) == [
        f"demo_study/shuffled/seed{k}" for k in range(3)
    ]


@pytest.mark.parametrize(
    "path", sorted(Path("configs/study").glob("*/study*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_study_files_load(path: Path) -> None:
    """Every committed study reads, its claims name its rows, and every row's config loads with its values."""
    study = read_study(path)
    for row in study.rows.values():
        point = {k: v[0] for k, v in row.tune.items()}
        load_config(row.config, [f"{k}={json.dumps(v)}" for k, v in {**row.set, **point}.items()])


def test_scratch_study_trains_the_student_from_random_weights() -> None:
    """Table 2 in its own regime (issue 28): no student row loads pretrained weights; the teachers' do."""
    study = read_study("configs/study/scratch/study.yaml")
    for row in study.rows.values():
        cfg = load_config(row.config, [f"{k}={json.dumps(v)}" for k, v in row.set.items()])
        assert cfg.model.checkpoint is None and not cfg.model.freeze_backbone, row.name
        assert (cfg.data.img_size, cfg.model.timm_kwargs["patch_size"]) == (64, 8), row.name
    assert {r.like for r in study.rows.values() if r.set.get("teacher.control")} == {"ivit_vit"}


@pytest.mark.parametrize(("student", "loads_weights"), [("scratch", False), ("pretrained", True)])
def test_gpu_study_script_gives_the_student_weights_unless_scratch(
    tmp_path: Path, student: str, loads_weights: bool
) -> None:
    """scripts/gpu_study.sh with a stand-in python3 that records its arguments: STUDENT=scratch passes no
    model.checkpoint (the weights serve the teachers only), and the image cache is the study's own base.yaml."""
    import os
    import subprocess

    for store in ("tin_train_oracle14", "tin_train_vit14"):
        (tmp_path / "stores" / store).mkdir(parents=True)
        (tmp_path / "stores" / store / "store.json").write_text("{}")
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / "data" / "weights" / "deit_tiny_patch16_224.bf16.safetensors").write_bytes(b"")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    (tmp_path / "bin" / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "STUDENT": student}
    script = Path("scripts/gpu_study.sh").resolve()
    subprocess.run(
        ["bash", str(script), "data", "work", "configs/study/scratch/study.yaml"],
        cwd=tmp_path,
        env=env,
        check=True,
    )
    prepare, study = (tmp_path / "calls").read_text().splitlines()
    assert prepare.startswith("-m lfi.cli prepare configs/study/scratch/base.yaml ")
    assert ("model.checkpoint=" in study) is loads_weights and "loss.kd.checkpoint=data/weights/" in study


def test_gpu_grids_script_runs_the_parts_over_the_committed_folders(tmp_path: Path) -> None:
    """scripts/gpu_grids.sh with a stand-in python3 that prints its arguments (so they land in each part's
    log; the script's reading of the study file runs for real): the stores come first (part p), the frozen study's tuned rows are read from its study file,
    the shortcut part prepares its own cache, and the tarballs hold the committed runs but never a checkpoint
    or a folder moved aside."""
    import os
    import subprocess
    import sys
    import tarfile

    repo = Path.cwd()
    for name in ("configs", "scripts", "lfi"):
        (tmp_path / name).symlink_to(repo / name)
    done = tmp_path / "done" / "tinyimagenet"
    for folder in ("probe/seed1", "probe/seed2.stale-lr=0.001", "probe/seed1/checkpoints"):
        (done / folder).mkdir(parents=True)
    (done / "probe" / "seed1" / "metrics.json").write_text("{}")
    (done / "probe" / "seed1" / "checkpoints" / "last.ckpt").write_text("")
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / "data" / "weights" / "deit_tiny_patch16_224.bf16.safetensors").write_bytes(b"")
    (tmp_path / "bin").mkdir()
    fake = (  # `lfi extract` makes its store's store.json, as the real one does when it starts
        f'#!/bin/sh\ncase "$2" in *read_study*) exec {sys.executable} "$@";; esac\necho "$@"\n'
        'for a; do :; done; [ "$3" = extract ] && mkdir -p "$a" && : > "$a/store.json"\nexit 0\n'
    )
    (tmp_path / "bin" / "python3").write_text(fake)
    (tmp_path / "bin" / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path),
           "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "TI_DONE": str(done)}  # fmt: skip
    subprocess.run(["bash", "scripts/gpu_grids.sh", "data"], cwd=tmp_path, env=env, check=True)

    out = tmp_path / "out"
    files = [*(f"{p}.log" for p in "abcp"), "env.txt", "sc.tgz", "ti.tgz"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    logs = {p: (out / f"{p}.log").read_text().splitlines() for p in "abcp"}
    assert [line.split()[2] for line in logs["p"][:2]] == ["extract", "extract"]  # both teachers' stores
    assert not [line for p in "abc" for line in logs[p] if " extract " in line]  # made once, by p
    assert logs["p"][-1].endswith("--report-only")
    tuned = [r.name for r in read_study("configs/study/tinyimagenet/study.yaml").rows.values() if r.tune]
    assert logs["a"][-1].endswith(f"--jobs 6 --only {','.join(tuned)}") and "--only" not in logs["c"][-1]
    assert logs["b"][0].startswith("-m lfi.cli prepare configs/study/tinyimagenet_shortcut.yaml ")
    assert logs["b"][1].startswith("-m lfi.cli study configs/study/shortcut/study.yaml ")
    with tarfile.open(out / "ti.tgz") as tar:
        names = tar.getnames()
    assert "study/tinyimagenet/probe/seed1/metrics.json" in names
    assert not [n for n in names if "stale" in n or "ckpt" in n or "checkpoints" in n]


def test_a_moved_choice_trains_the_seed_runs_again(study_file: Path, tmp_path: Path) -> None:
    """A grid that grows moves a row's choice: seed folders of the old choice are stale (reported as such,
    never as the row's runs) and training moves them aside and trains them at the new choice."""
    run_study(read_study(study_file), jobs=2, runner=fake_train([]), echo=None)
    # the probe's grid loses its best point (1e-3): the choice moves to 3e-4, tie-broken by order
    study_file.write_text(study_file.read_text().replace("[3.0e-4, 1.0e-3, 3.0e-3]", "[3.0e-4, 3.0e-3]"))
    report = run_study(read_study(study_file), runner=fake_train([]), echo=None, train=False)
    probe = report["rows"]["probe"]
    assert probe["chosen"] == {"optim.lr": 3e-4}
    runs = tmp_path / "runs" / "demo_study" / "probe"
    assert probe["stale"] == {str(runs / f"seed{k}"): {"optim.lr": 1e-3} for k in (1, 2)}
    assert probe["runs"] == [str(runs / "tune" / "lr=0.0003" / "seed0")]  # the stale seeds are not reported
    text = study_markdown(report)
    assert "- `probe`: seed1 at lr=0.001" in text
    study_file.write_text(study_file.read_text().replace("[3.0e-4, 3.0e-3]", "[1.0e-4, 3.0e-4, 3.0e-3]"))
    grown = study_markdown(run_study(read_study(study_file), runner=fake_train([]), echo=None, train=False))
    assert "lr=0.0001: -, **lr=0.0003: 54.00**, lr=0.003: 41.00 (**at the edge** of optim.lr)" in grown
    study_file.write_text(study_file.read_text().replace("[1.0e-4, 3.0e-4, 3.0e-3]", "[3.0e-4, 3.0e-3]"))
    assert report["rows"]["ivit"]["stale"] == {} and len(report["rows"]["ivit"]["runs"]) == 3

    calls: list[str] = []
    result = run_study(read_study(study_file), runner=fake_train(calls), echo=None)
    assert sorted(calls) == ["demo_study/probe/seed1", "demo_study/probe/seed2"]
    assert result["rows"]["probe"]["stale"] == {} and len(result["rows"]["probe"]["runs"]) == 3
    for k in (1, 2):
        assert load_config(runs / f"seed{k}" / "config.yaml").optim.lr == 3e-4
        assert load_config(runs / f"seed{k}.stale-lr=0.001" / "config.yaml").optim.lr == 1e-3  # kept aside


def test_a_grown_grid_that_moves_a_choice_retrains_its_controls(study_file: Path, tmp_path: Path) -> None:
    """Issue 28 item 3: a row's grid grows past its top and the new point wins; the control that copies the
    row (`like`) keeps following it, so its seeds of the old choice are stale too, and all are trained again."""
    run_study(read_study(study_file), jobs=2, runner=fake_train([]), echo=None)
    study_file.write_text(study_file.read_text().replace("[0.5, 2.0]", "[0.5, 2.0, 4.0]"))
    report = run_study(read_study(study_file), runner=fake_train([]), echo=None, train=False)
    old = {"optim.lr": 1e-3, "loss.align_weight": 2.0}
    assert report["rows"]["shuffled"]["chosen"] == old  # the new points are not run yet: nothing moved
    assert report["rows"]["shuffled"]["stale"] == {} and len(report["rows"]["shuffled"]["runs"]) == 3

    calls: list[str] = []
    result = run_study(read_study(study_file), only=["ivit"], runner=fake_train(calls), echo=None)
    assert result["rows"]["ivit"]["chosen"] == {"optim.lr": 1e-3, "loss.align_weight": 4.0}
    new_points = [f"demo_study/ivit/tune/lr={lr}__align_weight=4.0/seed0" for lr in ("0.001", "0.003")]
    assert sorted(calls) == ["demo_study/ivit/seed1", "demo_study/ivit/seed2", *new_points]
    report = run_study(read_study(study_file), runner=fake_train([]), echo=None, train=False)
    runs = tmp_path / "runs" / "demo_study" / "shuffled"
    assert report["rows"]["shuffled"]["stale"] == {
        str(runs / f"seed{k}"): {"loss.align_weight": 2.0} for k in range(3)
    }
    assert report["rows"]["shuffled"]["runs"] == []  # never reported at the old choice

    calls = []
    run_study(read_study(study_file), runner=fake_train(calls), echo=None)
    assert sorted(calls) == [f"demo_study/shuffled/seed{k}" for k in range(3)]
    assert load_config(runs / "seed0" / "config.yaml").loss.align_weight == 4.0


def test_a_run_folder_without_the_tuned_key_is_named(study_file: Path, tmp_path: Path) -> None:
    run_study(read_study(study_file), runner=fake_train([]), echo=None)
    config = tmp_path / "runs" / "demo_study" / "shuffled" / "seed1" / "config.yaml"
    config.write_text(config.read_text().replace("  lr:", "  rate:", 1))
    with pytest.raises(ConfigError, match=r"shuffled/seed1/config.yaml: no 'optim.lr'"):
        run_study(read_study(study_file), runner=fake_train([]), echo=None, train=False)


def test_sweep_claims_reads_a_study_folder_by_its_study_json(study_file: Path, tmp_path: Path) -> None:
    """scripts/sweep_claims.py --study tests a claim the study file does not declare on the runs study.json
    lists for each row: the seeds at its choice, not the tuning runs beside them (ivit's tune/ holds 4)."""
    import os
    import subprocess
    import sys

    run_study(read_study(study_file), jobs=2, runner=fake_train([]), echo=None)
    root = tmp_path / "runs" / "demo_study"
    script = Path("scripts/sweep_claims.py").resolve()
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    claim = "maps: the maps are why:ivit:shuffled"
    args = [sys.executable, str(script), str(root), "--study", "--claim", claim]
    text = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    # ivit's seeds at lr 1e-3, align weight 2: test top-1 62.0, 62.1, 62.2; the control 10 points lower
    row = "| maps: the maps are why | ivit | shuffled | val | 62.10 ± 0.10 (n=3) | 52.10 ± 0.10 (n=3) |"
    assert row in text
    assert "+10.00 (Δ +10.00" in text
    (root / "study.json").unlink()
    failed = subprocess.run(args, env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "study.json" in failed.stderr
