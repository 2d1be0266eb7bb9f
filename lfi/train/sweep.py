"""Sweeps: one config trained over a grid of values and seeds, several runs at a time, resumable.

    runs = plan("configs/table2/vit_l.yaml", {"data.ratio": [0.01, 0.1, 0.5, 1.0]}, seeds=[0, 1, 2])
    statuses = run_sweep(runs, jobs=4, devices=["0"])   # four small runs share one GPU

`plan` expands the cartesian product of every swept key's values and the seeds; each run is the config with
its own dotted overrides (`KEY=VALUE`, as `lfi train` takes them) and its own experiment name,
``<config's experiment>/<key=value__...>/seed<k>`` (only [A-Za-z0-9._=-]), so its run folder is
``output_dir/<config's experiment>/<key=value__...>/seed<k>``. Every run's config is loaded and validated by
`plan`, before anything starts.

`run_sweep` trains each run in its own process (``python -m lfi.cli train CONFIG OVERRIDES...``), `jobs` at a
time, its output in ``<run folder>/train.log``; the processes end with the sweep, even a killed one
(`die_with_parent`), and each run folder has one writer (its ``.lock``). It can be run again after an
interruption: a finished run (metrics.json) is skipped, an unfinished one with checkpoints/last.ckpt
continues with ``--resume``, any other starts afresh. The table over the sweep's run folders is written by `lfi.show.sweep` (train does not
import show).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml

from lfi.config import ConfigError, load_config
from lfi.files import atomic_write
from lfi.train.runs import RunFiles, finished

#: Characters allowed in a run's folder name; anything else becomes '_'.
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
#: Keys a sweep sets itself (one folder per seed); `--set` may not sweep them.
_RESERVED = ("seed", "experiment", "output_dir")


@dataclass
class SweepRun:
    """One run of a sweep: its config file, its point of the grid (key -> value), seed, experiment name,
    run folder and the overrides that make it (base overrides, the point's values, seed, experiment)."""

    config: Path
    point: dict[str, Any]
    seed: int
    experiment: str
    run_dir: Path
    overrides: list[str]

    def command(self, resume: bool = False) -> list[str]:
        """The `lfi train` process of this run (continued from checkpoints/last.ckpt when `resume`)."""
        cmd = [sys.executable, "-m", "lfi.cli", "train", str(self.config), *self.overrides]
        return [*cmd, "--resume"] if resume else cmd

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"


@dataclass
class RunStatus:
    """How a run of `run_sweep` ended: 'ok', 'failed' (returncode: the exit code) or 'skipped' (finished
    before the sweep started); resumed: continued from checkpoints/last.ckpt."""

    experiment: str
    run_dir: str
    status: str
    returncode: int | None = None
    resumed: bool = False
    wall_s: float = 0.0
    device: str | None = None


#: runner(run, command, env, log) -> exit code; the default runs `command` in a subprocess, output to `log`.
Runner = Callable[[SweepRun, list[str], dict[str, str], Path], int]


# ---------------------------------------------------------------------------------------------- parsing


def split_values(text: str) -> list[str]:
    """'0.1,0.5' -> ['0.1', '0.5']; commas inside brackets, braces or quotes do not split:
    '[a,b],[c]' -> ['[a,b]', '[c]']."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ValueError(f"unbalanced brackets or quotes in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_set(item: str) -> tuple[str, list[Any]]:
    """'data.ratio=0.1,1.0' -> ('data.ratio', [0.1, 1.0]); each value parsed as YAML, as an override's."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError(f"--set {item!r} must look like section.key=value1,value2,...")
    try:
        values = [yaml.safe_load(v) if v else None for v in split_values(raw)]
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"--set {item!r}: {error}") from None
    return key, values


def parse_sets(items: Sequence[str]) -> dict[str, list[Any]]:
    """Several `--set` items as {key: values}, in order; a key given twice is an error."""
    sets: dict[str, list[Any]] = {}
    for item in items:
        key, values = parse_set(item)
        if key in sets:
            raise ConfigError(f"--set {key} given twice; list all its values in one --set")
        sets[key] = values
    return sets


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; '0-4' -> [0, 1, 2, 3, 4] (ranges and lists mix: '0,5-7')."""
    seeds: list[int] = []
    for part in split_values(text):
        low, dash, high = part.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(part)]
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


# ------------------------------------------------------------------------------------------------- plan


def override_value(value: Any) -> str:
    """A value as an override's text that YAML reads back as the same value (JSON is YAML)."""
    return json.dumps(value)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key -> its last part where no other key ends the same, else the whole key."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def value_label(value: Any) -> str:
    """A value as a folder name part: lists joined by '-' ([art_painting] -> art_painting), None -> null."""
    if isinstance(value, (list, tuple)):
        return "-".join(value_label(v) for v in value) or "none"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return _UNSAFE.sub("_", str(value))


def point_label(point: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """{'data.ratio': 0.1, 'optim.lr': 0.001} -> 'ratio=0.1__lr=0.001': only [A-Za-z0-9._=-], pairs joined by
    '__' (a folder name safe on every file system and in a shell without quotes)."""
    return "__".join(f"{_UNSAFE.sub('_', names[k])}={value_label(v)}" for k, v in point.items())


def plan(
    config_path: str | Path | Sequence[str | Path],
    sets: Mapping[str, Sequence[Any]],
    seeds: Sequence[int] = (),
    base_overrides: Sequence[str] = (),
) -> list[SweepRun]:
    """Every run of the sweep: for each config (one path or several, e.g. a table's ViT and I-ViT rows), the
    cartesian product of the `sets` values (in key order) and the seeds (none: the config's seed).

    Each run's config is loaded (defaults <- file <- base_overrides <- its values <- seed, experiment) and
    validated here, so a bad value fails before any run starts. Raises ConfigError on a reserved or empty
    key, two points with the same folder name, or two runs in the same folder.
    """
    paths = (
        [Path(config_path)] if isinstance(config_path, (str, PurePath)) else [Path(p) for p in config_path]
    )
    if not paths:
        raise ConfigError("sweep: no config file")
    for key, values in sets.items():
        if key in _RESERVED:
            raise ConfigError(f"--set {key}: a sweep sets {key} itself (use --seeds for seeds)")
        if not values:
            raise ConfigError(f"--set {key}: no values")
    names = short_keys(list(sets))
    points = [dict(zip(sets, combo, strict=True)) for combo in itertools.product(*sets.values())]
    labels = [point_label(p, names) for p in points]
    if len(set(labels)) != len(labels):
        dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise ConfigError(f"sweep: different values give the same run folder name {dupes}")
    runs: list[SweepRun] = []
    for path in paths:
        base = load_config(path, list(base_overrides))
        for point, label in zip(points, labels, strict=True):
            for seed in list(seeds) or [base.seed]:
                parts = [base.experiment, *([label] if label else []), f"seed{seed}"]
                experiment = "/".join(parts)
                values = [f"{k}={override_value(v)}" for k, v in point.items()]
                overrides = [*base_overrides, *values, f"seed={seed}", f"experiment={experiment}"]
                cfg = load_config(path, overrides)
                runs.append(SweepRun(path, point, seed, experiment, cfg.run_dir, overrides))
    folders = [r.run_dir.resolve() for r in runs]
    if len(set(folders)) != len(folders):
        raise ConfigError(
            "sweep: two runs share a run folder (do two configs have the same experiment name?)"
        )
    return runs


def sweep_root(runs: Sequence[SweepRun]) -> Path:
    """The folder of a sweep's summary (sweep.md, sweep.json): output_dir/<experiment> of a single config,
    the deepest folder holding them all for several configs."""
    bases = {r.run_dir.parents[1 if r.point else 0] for r in runs}
    if len(bases) == 1:
        return next(iter(bases))
    return Path(os.path.commonpath([str(b) for b in bases]))


def describe(runs: Sequence[SweepRun]) -> str:
    """The plan as text: the summary folder, then per run its folder and the command that trains it."""
    lines = [f"{len(runs)} runs; table and summary: {sweep_root(runs) / 'sweep.md'}, sweep.json"]
    for r in runs:
        lines.append(f"{r.run_dir}\n    {shlex.join(['lfi', *r.command()[3:]])}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- run


#: Set by `subprocess_runner` to the sweep's pid: `die_with_parent` in the child ends it with the sweep.
PARENT_ENV = "LFI_SWEEP_PID"


def die_with_parent() -> None:
    """In a process started by `subprocess_runner`: have the kernel send it SIGTERM when the sweep dies,
    however it dies (kill -9 included), so no orphaned trainer goes on writing a run folder (SIGTERM makes
    `lfi train` save a checkpoint and stop). Linux only (prctl PR_SET_PDEATHSIG); a no-op elsewhere."""
    parent = os.environ.pop(PARENT_ENV, None)  # popped: the trainer's own children have another parent
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent):  # the sweep died before prctl: the signal will never come
        os.kill(os.getpid(), signal.SIGTERM)


def subprocess_runner(run: SweepRun, command: list[str], env: dict[str, str], log: Path) -> int:
    """Run `command`, its stdout and stderr appended to `log` (a resumed run keeps its first attempt's log).
    The child learns the sweep's pid (`PARENT_ENV`) and dies with it (`die_with_parent`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**env, PARENT_ENV: str(os.getpid())}
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode


def run_sweep(
    runs: Sequence[SweepRun],
    jobs: int = 1,
    devices: Sequence[str] | None = None,
    runner: Runner | None = None,
    echo: Callable[[str], None] | None = print,
) -> list[RunStatus]:
    """Train every run, `jobs` at a time, each in its own process; returns a status per run, in plan order.

    devices: GPU ids; the k-th of the `jobs` slots runs its processes with CUDA_VISIBLE_DEVICES set to
    devices[k % len(devices)], so jobs > len(devices) puts several runs on one GPU (small runs that cannot
    fill it alone). None: the environment's devices, shared by all. A failed run does not stop the others.
    """
    if jobs < 1:
        raise ValueError(f"run_sweep: jobs must be >= 1, got {jobs}")
    runner = runner or subprocess_runner
    statuses: list[RunStatus | None] = [None] * len(runs)
    todo = iter(enumerate(runs))
    lock = threading.Lock()

    def say(text: str) -> None:
        if echo is not None:
            with lock:
                echo(text)

    def work(slot: int) -> None:
        device = str(devices[slot % len(devices)]) if devices else None
        while True:
            with lock:
                item = next(todo, None)
            if item is None:
                return
            i, run = item
            statuses[i] = _run_one(run, runner, device, say, f"[{i + 1}/{len(runs)}]")

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(min(jobs, len(runs)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for s in statuses if s is not None]


def _run_one(
    run: SweepRun, runner: Runner, device: str | None, say: Callable[[str], None], tag: str
) -> RunStatus:
    files = RunFiles(run.run_dir)
    if finished(files.root):
        say(f"{tag} skipped (finished): {run.run_dir}")
        return RunStatus(run.experiment, str(run.run_dir), "skipped", device=device)
    resume = files.last_checkpoint.is_file()
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    say(f"{tag} {'resuming' if resume else 'starting'}{f' on GPU {device}' if device else ''}: {run.run_dir}")
    start = time.perf_counter()
    try:
        code = runner(run, run.command(resume), env, run.log)
    except OSError as error:  # the process could not start
        say(f"{tag} failed to start: {error}")
        code = -1
    wall = time.perf_counter() - start
    ok = code == 0 and finished(files.root)
    status = RunStatus(run.experiment, str(run.run_dir), "ok" if ok else "failed", code, resume, wall, device)
    say(
        f"{tag} {status.status} (exit {code}, {wall:.0f} s): {run.run_dir}"
        + ("" if ok else f"; log {run.log}")
    )
    return status


def summary(runs: Sequence[SweepRun], statuses: Sequence[RunStatus], wall_s: float, **extra: Any) -> dict:
    """sweep.json's content: the plan (config, point, seed, folder, overrides of each run), the statuses,
    their counts and the sweep's wall time."""
    counts = {k: sum(s.status == k for s in statuses) for k in ("ok", "failed", "skipped")}
    plan_rows = [
        {"config": str(r.config), "point": r.point, "seed": r.seed, "experiment": r.experiment,
         "run_dir": str(r.run_dir), "overrides": r.overrides}
        for r in runs
    ]  # fmt: skip
    return {
        "plan": plan_rows,
        "statuses": [asdict(s) for s in statuses],
        "counts": counts,
        "wall_s": wall_s,
        **extra,
    }


def write_summary(path: str | Path, data: dict) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, default=str))
