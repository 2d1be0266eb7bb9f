"""A sweep run end to end: train its runs (`lfi.train.sweep.run_sweep`), then write its table and summary.

    <sweep root>/sweep.md     `lfi.show.report.build_report` over the sweep's finished run folders: runs that
                              differ only in seed pooled as mean ± std (n=k), in the layout of the paper's tables
    <sweep root>/sweep.json   the plan, each run's status (ok / failed with its exit code / skipped), wall time

The sweep root is output_dir/<config's experiment> (`lfi.train.sweep.sweep_root`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lfi.show.report import build_report
from lfi.train.runs import finished
from lfi.train.sweep import Runner, RunStatus, SweepRun, run_sweep, summary, sweep_root, write_summary


@dataclass
class SweepResult:
    statuses: list[RunStatus]
    root: Path
    report: Path | None  # sweep.md, None when no run has finished
    summary: Path  # sweep.json


def report_sweep(runs: Sequence[SweepRun], out: str | Path | None = None) -> Path | None:
    """sweep.md over the runs whose folders are finished (None, nothing written, when none is)."""
    done = [r.run_dir for r in runs if finished(r.run_dir)]
    if not done:
        return None
    path = Path(out) if out is not None else sweep_root(runs) / "sweep.md"
    build_report(done, path)
    return path


def sweep(
    runs: Sequence[SweepRun],
    jobs: int = 1,
    devices: Sequence[str] | None = None,
    runner: Runner | None = None,
    echo: Callable[[str], None] | None = print,
) -> SweepResult:
    """Train the runs (`run_sweep`), then write sweep.json and sweep.md in the sweep root. A report that
    cannot be built (e.g. runs of no table) is noted in sweep.json, and its error raised after it is written."""
    start = time.perf_counter()
    statuses = run_sweep(runs, jobs, devices, runner, echo)
    wall = time.perf_counter() - start
    root = sweep_root(runs)
    report: Path | None = None
    error: Exception | None = None
    try:
        report = report_sweep(runs)
    except (ValueError, OSError, KeyError) as e:
        error = e
    extra = {
        "jobs": jobs,
        "devices": list(devices) if devices else None,
        "report": str(report) if report else None,
    }
    if error is not None:
        extra["report_error"] = str(error)
    path = write_summary(root / "sweep.json", summary(runs, statuses, wall, **extra))
    if error is not None:
        raise error
    return SweepResult(statuses, root, report, path)
