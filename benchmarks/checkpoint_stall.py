"""How much of the training thread a background checkpoint write takes (issue 31, item 2): a thread writer
against lfi's writer process, side by side.

A writer thread (Lightning's `AsyncCheckpointIO`, which lfi used, with a host copy of the state in place of
a clone) frees the training thread only where the writer releases Python's GIL: torch's zip writer
(`PyTorchFileWriter.write_record`) keeps it while it copies and checksums each tensor, so a host-bound
training loop (a short step, many launches) loses a good part of the write's time. `lfi.train.engine.
ProcessCheckpointIO` copies the tensors to shared memory on the training thread and leaves the rest to a writer
process (`lfi.train.checkpoint_writer`).

The training thread runs a loop of small torch ops (a stand-in for a step's launches) at a rate measured alone,
then the same loop while a writer writes a state the size of a real run's `last.ckpt` (timm's DeiT-Tiny, with
AdamW's two moments for the parameters that train). Per write: `call_ms`, the save call on the training thread
(the snapshot: a clone, or the copy to shared memory); `lost_ms`, the loop time lost during the write (wall time
minus the work done at the lone rate); `write_ms`, the call to the file written. The writer process is started
(and its first write done) before the timed writes: a run pays its start once, off the training thread.

    python benchmarks/checkpoint_stall.py --out results/checkpoint_stall_cpu.json [--trains head full]
        [--writers thread process] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_throughput import environment  # noqa: E402  (benchmarks/, this script's folder)

from lfi.train.engine import ProcessCheckpointIO  # noqa: E402


def thread_writer() -> tuple[CheckpointIO, Callable[[], None]]:
    io = AsyncCheckpointIO(TorchCheckpointIO())
    io._ensure_setup()
    return io, lambda: io._executor.submit(lambda: None).result()  # queued behind the writes (one thread)


def process_writer() -> tuple[CheckpointIO, Callable[[], None]]:
    io = ProcessCheckpointIO()
    return io, io.writer.wait


#: writer name -> (a checkpoint IO, a call that returns once its writes are done)
WRITERS = {"thread": thread_writer, "process": process_writer}


def checkpoint_state(model_name: str, trains: str) -> dict:
    """A last.ckpt-like dict: the model's state and AdamW's moments of what trains ('head': a probe, 'full')."""
    model = timm.create_model(model_name, pretrained=False, num_classes=200)
    params = list(model.head.parameters()) if trains == "head" else list(model.parameters())
    moments = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
               for i, p in enumerate(params)}  # fmt: skip
    return {"state_dict": model.state_dict(), "optimizer_states": [{"state": moments}], "global_step": 1}


def state_bytes(state: dict) -> int:
    sizes: list[int] = []
    apply_to_collection(state, torch.Tensor, lambda t: sizes.append(t.numel() * t.element_size()))
    return sum(sizes)


def launches(until: threading.Event | float) -> tuple[int, float]:
    """Small in-place ops until the event is set, or for that many seconds: (ops done, wall seconds)."""
    x = torch.zeros(8)
    ops, start = 0, time.perf_counter()
    done = until.is_set if isinstance(until, threading.Event) else lambda: time.perf_counter() - start > until
    while not done():
        for _ in range(100):
            x.add_(1.0)
        ops += 100
    return ops, time.perf_counter() - start


def one_write(
    io: CheckpointIO, wait: Callable[[], None], state: dict, path: Path, rate: float
) -> dict[str, float]:
    """One write of `state` by `io` while the training thread runs `launches` (a helper thread waits for it)."""
    written = threading.Event()
    start = time.perf_counter()
    io.save_checkpoint(state, path)  # the snapshot, on the training thread, and the queued write
    called = time.perf_counter()
    waiter = threading.Thread(target=lambda: (wait(), written.set()))
    waiter.start()
    ops, wall = launches(written)
    write_ms = 1e3 * (time.perf_counter() - start)
    waiter.join()
    return {
        "call_ms": round(1e3 * (called - start), 1),
        "lost_ms": round(1e3 * (wall - ops / rate), 1),
        "write_ms": round(write_ms, 1),
    }


def measure(writer: str, state: dict, repeats: int) -> list[dict[str, float]]:
    io, wait = WRITERS[writer]()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        io.save_checkpoint(state, Path(tmp) / "warm.ckpt")  # the writer started, its first write done
        wait()
        for i in range(repeats):
            ops, wall = launches(0.5)  # the lone rate, measured before each write
            runs.append(one_write(io, wait, state, Path(tmp) / f"{i}.ckpt", ops / wall))
        io.teardown()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="deit_tiny_patch16_224")
    parser.add_argument("--trains", nargs="+", default=["head", "full"], choices=["head", "full"])
    parser.add_argument("--writers", nargs="+", default=list(WRITERS), choices=list(WRITERS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report = {**environment(torch.device("cpu")), "rows": []}
    for trains in args.trains:
        state = checkpoint_state(args.model, trains)
        for writer in args.writers:  # one after the other: the same host minute for both
            runs = measure(writer, state, args.repeats)
            row = {"trains": trains, "state_mb": round(state_bytes(state) / 2**20, 1), "writer": writer}
            for key in ("call_ms", "lost_ms", "write_ms"):
                row[f"{key}_median"] = statistics.median(r[key] for r in runs)
            report["rows"].append({**row, "runs": runs})
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
