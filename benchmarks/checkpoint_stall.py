"""How much of the training thread a background checkpoint write takes (issue 31, item 2).

`lfi.train.engine.BackgroundCheckpointIO` copies the state to host memory on the training thread, then one
background thread serialises and writes it while training goes on. Writing in another thread frees the
training thread only where the writer releases Python's GIL: torch's zip writer (`PyTorchFileWriter.
write_record`) keeps it while it copies and checksums each tensor, so a host-bound training loop (a short
step, many launches) may lose about as much time as the write takes.

This measures it directly: the training thread runs a loop of small torch ops (a stand-in for a step's
launches) at a rate measured alone, then the same loop while `BackgroundCheckpointIO` writes a state the size
of a real run's `last.ckpt` (timm's DeiT-Tiny, with AdamW's two moments for the parameters that train);
`lost_ms` is the loop time lost during the write (wall time minus the work done at the lone rate), against
the write's own time (`write_ms`, submit to file written). Each variant is repeated; the CRC32 of torch's zip
records (`torch.serialization.set_crc32_options`) is one of them.

    python benchmarks/checkpoint_stall.py --out results/checkpoint_stall_cpu.json [--trains head full] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import timm
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lfi.train.engine import BackgroundCheckpointIO  # noqa: E402


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


def one_write(state: dict, folder: Path, rate: float) -> dict[str, float]:
    """One background write of `state` while the training thread runs `launches`."""
    io = BackgroundCheckpointIO(TorchCheckpointIO())
    written = threading.Event()
    path = folder / "last.ckpt"
    submitted = time.perf_counter()
    io.save_checkpoint(state, path)  # the host copy (a no-op on CPU tensors) and the queued write
    io._submit(written.set)  # queued behind the write (one writer thread)
    ops, wall = launches(written)
    write_ms = 1e3 * (time.perf_counter() - submitted)
    io.teardown()
    return {"write_ms": round(write_ms, 1), "lost_ms": round(1e3 * (wall - ops / rate), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="deit_tiny_patch16_224")
    parser.add_argument("--trains", nargs="+", default=["head", "full"], choices=["head", "full"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report = {
        "device": f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "rows": [],
    }
    for trains in args.trains:
        state = checkpoint_state(args.model, trains)
        for crc in (True, False):
            torch.serialization.set_crc32_options(crc)
            runs = []
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.repeats):
                    ops, wall = launches(0.5)  # the lone rate, measured before each write
                    runs.append(one_write(state, Path(tmp), ops / wall))
            lost = [r["lost_ms"] for r in runs]
            write = [r["write_ms"] for r in runs]
            report["rows"].append({
                "trains": trains, "state_mb": round(state_bytes(state) / 2**20, 1), "crc32": crc,
                "write_ms_median": statistics.median(write), "lost_ms_median": statistics.median(lost),
                "lost_share_median": round(statistics.median(lo / w for lo, w in zip(lost, write, strict=True)), 2),
                "runs": runs,
            })  # fmt: skip
            print(json.dumps(report["rows"][-1]), flush=True)
    torch.serialization.set_crc32_options(True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
