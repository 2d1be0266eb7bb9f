"""What a short fit pays outside its steps for the checkpoint writer's start and the garbage collector (issue 31),
side by side in one run.

Cases, each fit in a fresh process (one writer per process; the collector's counts are the process's own), taken
in turn `--repeats` times:
  lfi                   `lfi.train.engine.train` as it is: the writer started before the build (`start_writer`),
                        the heap alive at the fit's start frozen through the evaluation (`frozen_heap`);
  writer_at_first_save  the writer started by the first checkpoint save (lfi before 2026-12-07);
  heap_unfrozen         `train` without `frozen_heap` (lfi before 2026-12-07).
The fit: a 2-block, 32-wide ViT on 32 px synthetic images (its compute next to nothing: the fixed costs show),
10 epochs, validation and last.ckpt every 5, no sanity check. Per case, the medians of `fit_s` (trainer.fit's wall
time), `end_s` (after the last step: the final checkpoints, and the wait for every write in teardown), the
garbage collector's full passes during the fit (`FitClock` of train_throughput.py) and `train_call_s` (the whole
`train` call: build, fit, evaluation), and each run's figures with the full passes of the whole call.

    python benchmarks/fit_fixed_costs.py --out results/fit_fixed_costs_cpu.json [--repeats 3] [--images 512]
        [--accelerator cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_overhead import tiny_config, tiny_data  # noqa: E402  (benchmarks/, this script's folder)
from train_throughput import FitClock, environment  # noqa: E402

from lfi.train import engine  # noqa: E402

CASES = ("lfi", "writer_at_first_save", "heap_unfrozen")


@contextlib.contextmanager
def as_case(case: str) -> Iterator[None]:
    """lfi.train.engine as `case` has it, until the block ends."""
    kept = engine.start_writer, engine.frozen_heap
    if case == "writer_at_first_save":
        engine.start_writer = lambda strategy: None
    elif case == "heap_unfrozen":
        engine.frozen_heap = contextlib.nullcontext
    try:
        yield
    finally:
        engine.start_writer, engine.frozen_heap = kept


@contextlib.contextmanager
def full_passes() -> Iterator[list[float]]:
    """The seconds of each full pass of the garbage collector while the block runs."""
    passes: list[float] = []
    began = [0.0]

    def timed(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                passes.append(time.perf_counter() - began[0])

    gc.callbacks.append(timed)
    try:
        yield passes
    finally:
        gc.callbacks.remove(timed)


def one_fit(case: str, accelerator: str, images: int, out: Path) -> dict:
    """One fit of `case` in this process -> FitClock's split, `fit_s`, `end_s`, and `train_call_s` and
    `gc2_in_train_s` over the whole `train` call (its build and evaluation too; a pass that `frozen_heap` puts
    off past the call is not seen)."""
    cfg = tiny_config(out, "vit", accelerator, epochs=10, batch=32, check_val_every_n_epoch=5,
                      checkpoint_every_n_epochs=5, log_every_n_steps=10)  # fmt: skip
    data, _ = tiny_data(out, "vit", images)
    clock = FitClock()
    with as_case(case), full_passes() as passes:
        began = time.perf_counter()
        run = engine.train(cfg, data, callbacks=[clock])
        call_s = time.perf_counter() - began
    split = clock.report(run.metrics["train_seconds"])
    return {"fit_s": round(run.metrics["train_seconds"], 3), "end_s": round(split["end_s"] + split["teardown_s"], 3),
            "gc2_during_fit": len(split["gc2_each_s"]), "train_call_s": round(call_s, 3),
            "gc2_in_train_s": [round(took, 4) for took in passes], **split}  # fmt: skip


def run_case(case: str, args: argparse.Namespace) -> dict:
    """`one_fit` in a fresh interpreter (this script with --case)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "fit.json"
        command = [sys.executable, __file__, "--case", case, "--result", str(result), "--runs", tmp,
                   "--accelerator", args.accelerator, "--images", str(args.images)]  # fmt: skip
        subprocess.run(command, check=True)
        return json.loads(result.read_text())


def summary(runs: list[dict]) -> dict:
    keys = ("fit_s", "end_s", "gc2_s", "gc2_during_fit", "train_call_s")
    return {f"{key}_median": round(statistics.median(run[key] for run in runs), 4) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the JSON result")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=512, help="training images (batch 32)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child: one fit
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        fit = one_fit(args.case, args.accelerator, args.images, Path(args.runs))
        Path(args.result).write_text(json.dumps(fit))
        return
    if not args.out:
        parser.error("--out is required")
    runs: dict[str, list[dict]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            runs[case].append(run_case(case, args))
            print(
                case,
                {k: runs[case][-1][k] for k in ("fit_s", "end_s", "gc2_during_fit", "gc2_s")},
                flush=True,
            )
    rows = [{"case": case, **summary(case_runs), "runs": case_runs} for case, case_runs in runs.items()]
    out = {
        **environment(torch.device(args.accelerator)),
        "accelerator": args.accelerator,
        "images": args.images,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
