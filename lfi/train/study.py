"""Studies: the rows of a comparison, each tuned on the validation split with the same effort, then run over seeds.

A study file names its rows; each row is a config, the values it sets, and the grid it is tuned over:

    seeds: [0, 1, 2]
    select: val/acc1                     # a metrics.csv column, read at the last epoch (the tested weights)
    reference: probe                     # study.md's differences are to this row (default: the first)
    claims:                              # study.md: each a Welch test over seeds, Holm over all claims
      - {claim: "I-ViT beats ViT", row: ivit, against: probe}
    threshold: 60                        # study.md: epochs each row needs to reach this `select` value
    rows:
      probe:    {config: ../tinyimagenet_deit_tiny.yaml, set: {model.variant: vit},
                 tune: {optim.lr: [3.0e-4, 1.0e-3, 3.0e-3]}}
      shuffled: {config: ..., set: {teacher.control: shuffled}, like: ivit}

Phases (`run_study`):
  1. tune     every row with a `tune` grid: one run per point, seed seeds[0], into <study>/<row>/tune/<point>/
  2. select   per row, the point of best `select` on the held-out split (never a test set; ties: the first)
  3. final    every row with its chosen point (a `like` row takes the chosen point of the row it names: the
              controls run with the hyper-parameters of the method they control) over the other seeds, into
              <study>/<row>/seed<k>; the tuning run of the chosen point is the row's seeds[0] run
A seed folder's name does not hold the point, so when a grid grows and a row's choice moves, its seed folders
hold runs of the old choice (`drift`, read from their config.yaml): training moves each aside, to
<row>/seed<k>.stale-<old point>, and trains it again at the new choice; `train=False` reports them as stale,
never as the row's runs.
A run's overrides: the row's `set`, then the command line's (paths of data, weights, stores on this machine),
then its grid point. Every run is a `lfi.train.sweep` run: resumable, a finished run is not run again. `study.json` in
<output_dir>/<study> records the grids, every tuning run's score, the choices and each row's run folders
(`lfi study` then writes study.md, the report over them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfi.config import ConfigError, load_config
from lfi.files import atomic_write
from lfi.train.runs import finished, load_run
from lfi.train.sweep import Runner, RunStatus, SweepRun, plan, run_sweep, value_label


@dataclass
class Row:
    """One row of a study: its config file, the values it sets, its tuning grid and the row it copies."""

    name: str
    config: Path
    set: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, list[Any]] = field(default_factory=dict)
    like: str | None = None


@dataclass
class Study:
    """A study file, read: its name (the folder under output_dir), rows, seeds and selection metric."""

    name: str
    rows: dict[str, Row]
    seeds: list[int]
    select: str = "val/acc1"
    reference: str | None = None
    threshold: float | None = None
    claims: list[dict[str, str]] = field(default_factory=list)

    @property
    def tune_seed(self) -> int:
        return self.seeds[0]


def _check_row(name: str, spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or "config" not in spec:
        raise ConfigError(f"{where}: rows.{name} must be a mapping with a 'config' file")
    unknown = set(spec) - {"config", "set", "tune", "like"}
    if unknown:
        raise ConfigError(
            f"{where}: rows.{name}: unknown keys {sorted(unknown)}; expected config, set, tune, like"
        )
    if spec.get("like") and spec.get("tune"):
        raise ConfigError(
            f"{where}: rows.{name} has both 'like' and 'tune': a row copies a choice or makes its own"
        )
    for key, values in (spec.get("tune") or {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: rows.{name}.tune.{key} must be a non-empty list of values")


def read_study(path: str | Path) -> Study:
    """A study file; config paths are relative to it. ConfigError names the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    keys = {"name", "seeds", "select", "rows", "reference", "threshold", "claims"}
    if set(data) - keys:
        raise ConfigError(f"{where}: unknown keys {sorted(set(data) - keys)}; expected {sorted(keys)}")
    rows: dict[str, Row] = {}
    for name, spec in (data.get("rows") or {}).items():
        _check_row(name, spec, where)
        rows[name] = Row(name, path.parent / spec["config"], dict(spec.get("set") or {}),
                         dict(spec.get("tune") or {}), spec.get("like"))  # fmt: skip
    if not rows:
        raise ConfigError(f"{where}: no rows")
    for row in rows.values():
        if row.like is not None and (row.like not in rows or rows[row.like].like is not None):
            raise ConfigError(
                f"{where}: rows.{row.name}.like={row.like!r} must name a row that is tuned itself"
            )
    seeds = data.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' must be a list of distinct integers, got {seeds!r}")
    reference = data.get("reference")
    if reference is not None and reference not in rows:
        raise ConfigError(f"{where}: reference={reference!r} is not a row")
    name, select = str(data.get("name", path.stem)), str(data.get("select", "val/acc1"))
    claims = _read_claims(data.get("claims") or [], rows, where)
    return Study(name, rows, seeds, select, reference, data.get("threshold"), claims)


def _read_claims(claims: Any, rows: Mapping[str, Row], where: str) -> list[dict[str, str]]:
    """Each claim {claim: text, row: a row, against: another row}; ConfigError names the bad one."""
    if not isinstance(claims, list):
        raise ConfigError(f"{where}: 'claims' must be a list of {{claim, row, against}} mappings")
    for i, c in enumerate(claims):
        if not isinstance(c, dict) or set(c) != {"claim", "row", "against"}:
            raise ConfigError(f"{where}: claims[{i}] must be a mapping with exactly claim, row, against")
        for key in ("row", "against"):
            if c[key] not in rows:
                raise ConfigError(f"{where}: claims[{i}].{key}={c[key]!r} is not a row")
    return [{k: str(v) for k, v in c.items()} for c in claims]


def _values(point: Mapping[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in point.items()]


def tuning_runs(
    study: Study, overrides: Sequence[str], only: Sequence[str] | None = None
) -> dict[str, list[SweepRun]]:
    """Each tuned row's grid runs (seed seeds[0]); a row without a grid has one run, its config as it is."""
    out = {}
    for row in study.rows.values():
        if row.like is not None or (only and row.name not in only):
            continue
        base = [*_values(row.set), *overrides, f"experiment={study.name}/{row.name}/tune"]
        out[row.name] = plan(row.config, row.tune, [study.tune_seed], base)
    return out


def score(run: SweepRun, metric: str) -> float | None:
    """`metric` at the last epoch that logged it (the weights that are tested), None while unfinished."""
    if not finished(run.run_dir):
        return None
    curve = load_run(run.run_dir).curve(metric)
    if not curve:
        raise ValueError(f"{run.run_dir}/metrics.csv has no column {metric!r} to select on")
    return float(curve[-1][1])


def choose(runs: Sequence[SweepRun], metric: str) -> tuple[SweepRun | None, list[dict[str, Any]]]:
    """The run of best `metric` (the first of equals; None when none finished) and every point's score."""
    scored = [(r, score(r, metric)) for r in runs]
    table = [{"point": r.point, "score": s, "run_dir": str(r.run_dir)} for r, s in scored]
    done = [(r, s) for r, s in scored if s is not None]
    return (max(done, key=lambda rs: rs[1])[0] if done else None), table


def final_runs(study: Study, chosen: Mapping[str, SweepRun], overrides: Sequence[str],
               only: Sequence[str] | None = None) -> dict[str, list[SweepRun]]:  # fmt: skip
    """Each row at its chosen point (or its `like` row's) over the seeds; a tuned row reuses its tuning run
    for seeds[0]. Rows whose choice is not made yet are left out."""
    out = {}
    for row in study.rows.values():
        if only and row.name not in only:
            continue
        source = chosen.get(row.like or row.name)
        if source is None:
            continue
        seeds = study.seeds if row.like is not None else study.seeds[1:]
        base = [*_values(row.set), *overrides, *_values(source.point), f"experiment={study.name}/{row.name}"]
        runs = plan(row.config, {}, seeds, base) if seeds else []
        out[row.name] = ([] if row.like is not None else [source]) + runs
    return out


def drift(run: SweepRun, point: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `point` that the run folder's config.yaml holds at another value ({key: its value}); {}
    when they agree or when the folder has no config.yaml yet (nothing trained there)."""
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        return {}
    saved = yaml.safe_load(path.read_text()) or {}
    out = {}
    for key, value in point.items():
        node: Any = saved
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{path}: no {key!r}: cannot tell whether this run has the study's choice")
            node = node[part]
        if node != value:
            out[key] = node
    return out


def stale_runs(
    study: Study, chosen: Mapping[str, SweepRun], finals: Mapping[str, list[SweepRun]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per row, its planned runs whose folder was trained at another point than the row's choice: {row:
    {run folder: the point's values it holds}}. A tuned row's own tuning run always has its point."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, runs in finals.items():
        point = chosen[study.rows[name].like or name].point
        for run in runs:
            if found := drift(run, point):
                out.setdefault(name, {})[str(run.run_dir)] = found
    return out


def set_aside(run_dir: Path, old: Mapping[str, Any]) -> Path:
    """Move a stale run folder to <name>.stale-<its old values> beside it (kept, never reported)."""
    label = "__".join(f"{k.rsplit('.', 1)[-1]}={value_label(v)}" for k, v in old.items())
    target = run_dir.with_name(f"{run_dir.name}.stale-{label}")
    k = 1
    while target.exists():
        k += 1
        target = run_dir.with_name(f"{run_dir.name}.stale-{label}-{k}")
    return run_dir.rename(target)


def run_study(
    study: Study,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    devices: Sequence[str] | None = None,
    only: Sequence[str] | None = None,
    runner: Runner | None = None,
    echo: Callable[[str], None] | None = print,
    train: bool = True,
) -> dict[str, Any]:
    """Tune, select, run the seeds (module docstring); returns study.json's content, also written to
    <output_dir>/<study name>/study.json (output_dir of the first row's config after `overrides`).
    train=False trains nothing: the choices and tables of the runs finished so far."""
    # a `like` row needs the choice of its row: that row's grid is planned too (finished runs are skipped)
    tuned = None if only is None else [*only, *(study.rows[r].like for r in only if study.rows[r].like)]
    tuning = tuning_runs(study, overrides, tuned)
    statuses: list[RunStatus] = []
    if train:
        statuses += run_sweep([r for runs in tuning.values() for r in runs], jobs, devices, runner, echo)
    chosen, grids = {}, {}
    for name, runs in tuning.items():
        best, grids[name] = choose(runs, study.select)
        if best is not None:
            chosen[name] = best
    finals = final_runs(study, chosen, overrides, only)
    stale = stale_runs(study, chosen, finals)
    if train:  # a run of an earlier choice is trained again at the row's choice, its folder kept aside
        for name, runs in stale.items():
            for run_dir, old in runs.items():
                moved = set_aside(Path(run_dir), old)
                if echo is not None:
                    echo(f"{name}: {run_dir} was trained at {old}, not at the choice: moved to {moved.name}")
        stale = {}
        statuses += run_sweep([r for runs in finals.values() for r in runs], jobs, devices, runner, echo)
    reported = {
        name: [str(r.run_dir) for r in runs if str(r.run_dir) not in stale.get(name, {})]
        for name, runs in finals.items()
    }
    result = {
        "study": study.name,
        "select": study.select,
        "seeds": study.seeds,
        "reference": study.reference,
        "threshold": study.threshold,
        "claims": study.claims,
        "rows": {
            name: {
                "config": str(row.config), "set": row.set, "tune": row.tune, "like": row.like,
                "grid": grids.get(name, []),
                "chosen": (chosen.get(row.like or name).point if chosen.get(row.like or name) else None),
                "runs": reported.get(name, []),
                "stale": stale.get(name, {}),
            }
            for name, row in study.rows.items() if not only or name in only
        },
        "failed": [s.run_dir for s in statuses if s.status == "failed"],
    }  # fmt: skip
    path = study_root(study, overrides) / "study.json"
    if path.is_file():  # a study run row by row (--only) keeps the rows of the earlier calls
        result["rows"] = {**json.loads(path.read_text()).get("rows", {}), **result["rows"]}
    atomic_write(path, json.dumps(result, indent=2, default=str))
    return result


def study_root(study: Study, overrides: Sequence[str]) -> Path:
    """<output_dir>/<study name>, output_dir read from the first row's config after `overrides`."""
    first = next(iter(study.rows.values()))
    return Path(load_config(first.config, list(overrides)).output_dir) / study.name
