"""The host's cost per training step: `lfi train` against Lightning's loop alone and against the bare step
loop, on the same batches, and the host-device synchronisations per step, for a ViT small enough that its
compute is next to nothing (what is measured is the host's work).

    python benchmarks/step_overhead.py --out overhead.json                     # CPU
    python benchmarks/step_overhead.py --variant iq_ic_gc --out overhead.json  # I-ViT with the oracle's maps
    python benchmarks/step_overhead.py --cuda --out overhead.json              # on the GPU (bf16): real syncs too

The three loops draw the same batches from the GPU data path (`lfi.data.gpu`, forced on the CPU as
`data.gpu_pipeline=true` does). `ms_per_step`: the 10th percentile of the times between the ends of two steps
of an epoch (a shared host's noise only adds), the least over `--repeats` runs taken in turn, of
  fit        `lfi.train.engine.train` (Lightning's loop, our callbacks, logging, scheduler, bookkeeping);
  lightning  the same step in Lightning's loop with nothing else (no logger, callbacks, scheduler, checkpoints);
  bare       a plain loop: next batch, forward + criterion, zero_grad, backward, AdamW.
On the CPU the training thread's CPU time (other processes on a shared host then move it less), on a GPU wall
time. `python_calls_per_step` (sys.setprofile) gives the same split as a count that nothing else moves.

`syncs_per_step` counts over ten steps of a further fit (library defaults: a logging step among them) what would
make the host wait for the GPU on a CUDA device (`StepSyncs`): reading a device value (`.item()`, `float(t)`,
`bool(t)`, `tolist`, `.cpu()`, `.numpy()`), data-dependent shapes (`nonzero`, boolean indexing,
`masked_select`, `unique`, `repeat_interleave`) and host data made a tensor (`torch.tensor(list, device=...)`,
a Python list as an index: a synchronous copy from pageable memory), each by where it came from. On a GPU the
same steps run under `torch.cuda.set_sync_debug_mode("warn")`, which names every real one (`cuda_syncs`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_throughput import environment  # noqa: E402  (benchmarks/, this script's folder)

from lfi.config import Config, config_from_dict  # noqa: E402
from lfi.data.gpu import DeviceBatches  # noqa: E402
from lfi.demo.synthetic import ShortcutShapes  # noqa: E402
from lfi.train.build import Built, build  # noqa: E402
from lfi.train.data import ExperimentData  # noqa: E402
from lfi.train.engine import parameter_groups, train  # noqa: E402
from lfi.train.tasks import step_losses  # noqa: E402

#: aten ops that make the host wait for the device on CUDA (a value read, or an output shape from the data)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "unique", "_unique",
            "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave", "allclose"}  # fmt: skip
#: aten op of a tensor made from host data (torch.tensor(data), a Python list as an index)
HOST_DATA_OPS = {"lift_fresh"}
#: Tensor methods that copy to the host (on a CPU tensor they dispatch nothing, so they are wrapped)
HOST_READS = ("tolist", "numpy", "cpu")


class StepSyncs(TorchDispatchMode):
    """Counts, while `counting`, the calls that would synchronise a CUDA device (see the module docstring),
    by where they came from (the innermost frames outside torch). `exempt`: data pointers of tensors that a
    CUDA run keeps on the host (AdamW's step counters), whose reads cost no wait."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.exempt: set[int] = set()
        self.calls: collections.Counter[str] = collections.Counter()
        self.ops = 0

    def start(self, trainer: L.Trainer) -> None:
        steps = [s for o in trainer.optimizers for s in (st.get("step") for st in o.state.values())]
        self.exempt = {s.data_ptr() for s in steps if isinstance(s, torch.Tensor) and not s.is_cuda}
        self.counting = True

    def stop(self) -> None:
        self.counting = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if self.counting:
            self.ops += 1
            name = func.overloadpacket.__name__
            if (
                name in HOST_DATA_OPS
                or (name in SYNC_OPS and not self._exempt(args))
                or _boolean_index(name, args)
            ):
                self.record(name)
        return func(*args, **(kwargs or {}))

    def _exempt(self, args: tuple) -> bool:
        return bool(args) and isinstance(args[0], torch.Tensor) and args[0].data_ptr() in self.exempt

    def record(self, what: str) -> None:
        frames = [f for f in traceback.extract_stack()[:-2] if f"{os.sep}torch{os.sep}" not in f.filename]
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:]))
        self.calls[f"{what}: {where}"] += 1

    @contextmanager
    def host_reads(self) -> Iterator[None]:
        """Tensor.tolist / numpy / cpu counted too, while inside."""
        originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

        def counted(name: str, method: Any) -> Any:
            def call(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                if self.counting and tensor.data_ptr() not in self.exempt:
                    self.record(name)
                return method(tensor, *args, **kwargs)

            return call

        for name, method in originals.items():
            setattr(torch.Tensor, name, counted(name, method))
        try:
            yield
        finally:
            for name, method in originals.items():
                setattr(torch.Tensor, name, method)


def _boolean_index(name: str, args: tuple) -> bool:
    """Indexing with a boolean mask: the result's shape depends on the mask's values."""
    if name not in ("index", "index_put", "index_put_") or len(args) < 2:
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)


class PythonCalls:
    """Python and C function calls on this thread while counting (sys.setprofile): the host's work per step in
    a figure that other processes on the host do not move. This file's own calls are left out."""

    def __init__(self) -> None:
        self.calls = 0

    def start(self, trainer: L.Trainer) -> None:
        sys.setprofile(self._count)

    def stop(self) -> None:
        sys.setprofile(None)

    def _count(self, frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call") and frame.f_code.co_filename != __file__:
            self.calls += 1


class StepWindow(L.Callback):
    """Times every step of every epoch (end to end, by `clock`) and runs `counter` from the end of step
    `first` to the end of step `last` of the first epoch (whole steps, away from the epoch's edges)."""

    def __init__(
        self, counter: Any = None, first: int = 2, last: int = 12, clock: Any = time.perf_counter
    ) -> None:
        self.counter, self.first, self.last, self.clock = counter, first, last, clock
        self.step_s: list[float] = []
        self._end: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._end = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        now = self.clock()
        if self._end is not None:
            self.step_s.append(now - self._end)
        self._end = now
        index = args[-1]
        if self.counter is not None and trainer.current_epoch == 0 and index == self.first:
            self.counter.start(trainer)
        if self.counter is not None and trainer.current_epoch == 0 and index == self.last:
            self.counter.stop()

    @property
    def steps(self) -> int:
        return self.last - self.first


def tiny_config(out: Path, variant: str, device: str, epochs: int, batch: int, **trainer: Any) -> Config:
    """A 2-block, 32-wide ViT on 32 px images (its compute next to nothing), the GPU data path with
    augmentation, the library's logging and checkpoint defaults (`trainer`: other trainer.* keys)."""
    aligned = variant != "vit"
    return config_from_dict({
        "experiment": f"overhead-{variant}", "output_dir": str(out), "output_dir_allow_outside": True, "seed": 0,
        "teacher": {"name": "oracle", "store": str(out / "store")} if aligned else {"name": "none"},
        "model": {"name": "vit_tiny_patch16_224", "variant": variant,
                  "timm_kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}},
        "data": {"dataset": "synthetic", "img_size": 32, "batch_size": batch, "num_workers": 0, "augment": True,
                 "gpu_pipeline": True, "cache_dir": str(out / "cache")},
        "optim": {"lr": 1e-3, "warmup_epochs": 1},
        "trainer": {"max_epochs": epochs, "accelerator": device, "devices": 1, "sanity_val_steps": 0,
                    "precision": "bf16-mixed" if device == "cuda" else "32", "enable_progress_bar": False, **trainer},
    }, "step_overhead")  # fmt: skip


def tiny_data(out: Path, variant: str, images: int) -> tuple[ExperimentData, Any]:
    """ShortcutShapes at 32 px, and the oracle's store of its training images for an aligned variant."""
    train_set = ShortcutShapes("train", images, size=32)
    val = ShortcutShapes("val", 32, size=32)
    data = ExperimentData(train_set, val, {"val": val}, train_set.classes)
    if variant == "vit":
        return data, None
    from lfi.extract.oracle import OracleTeacher
    from lfi.extract.run import extract
    from lfi.store.shards import InteractionStore

    extract(OracleTeacher(grid=(8, 8)), train_set, out / "store", progress=False)
    return data, InteractionStore(out / "store", expect={"teacher": "oracle"})


def device_batches(built: Built, device: torch.device) -> DeviceBatches:
    """The run's training batches on `device`, without a trainer."""
    # what the data module reads of a trainer, so that it builds the batches on `device`
    built.datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=device), global_rank=0,
                                               world_size=1, current_epoch=0)  # fmt: skip
    return built.datamodule.train_dataloader()


def bare_steps(
    cfg: Config, data: ExperimentData, store: Any, epochs: int, clock: Any, window: StepWindow | None = None
) -> list[float]:
    """Seconds between step ends of the plain loop over the same batches (next batch, forward + criterion,
    zero_grad, backward, AdamW), every epoch; `window`'s counter runs over its steps of the first epoch."""
    built = build(cfg, data, store)
    device = torch.device(cfg.trainer.accelerator)
    model, criterion = built.model.to(device), built.criterion.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.optim.lr)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision.startswith("bf16")
    )
    loader = device_batches(built, device)
    times = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        end = None
        for index, batch in enumerate(loader):
            with autocast:
                loss = step_losses(built.task, model, criterion, batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            now = clock()
            if end is not None:
                times.append(now - end)
            end = now
            if window is not None and epoch == 0 and index == window.first:
                window.counter.start(None)
            if window is not None and epoch == 0 and index == window.last:
                window.counter.stop()
    return times


class PlainModule(L.LightningModule):
    """The bare step as a LightningModule: forward + criterion, AdamW, nothing else."""

    def __init__(self, cfg: Config, built: Built) -> None:
        super().__init__()
        self.cfg, self.task, self.model, self.criterion = cfg, built.task, built.model, built.criterion

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return step_losses(self.task, self.model, self.criterion, batch)["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameter_groups(self.model, self.cfg), lr=self.cfg.optim.lr)


def lightning_steps(
    cfg: Config, data: ExperimentData, store: Any, epochs: int, clock: Any, timing: StepWindow | None = None
) -> list[float]:
    """Seconds between step ends of the bare step in Lightning's loop alone (no logger, callbacks, checkpoints,
    scheduler or validation): Lightning's own floor."""
    built = build(cfg, data, store)
    device = torch.device(cfg.trainer.accelerator)
    loader = device_batches(built, device)
    timing = timing or StepWindow(clock=clock)
    t = cfg.trainer
    trainer = L.Trainer(max_epochs=epochs, accelerator=t.accelerator, devices=1, precision="32-true" if t.precision == "32" else t.precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timing])  # fmt: skip
    trainer.fit(PlainModule(cfg, built), train_dataloaders=loader)
    return timing.step_s


@contextmanager
def cuda_sync_warnings(counter: StepSyncs) -> Iterator[collections.Counter[str]]:
    """Every synchronising CUDA call while `counter` counts, by where it came from (torch's sync debug
    mode, 'warn'); nothing on a CPU."""
    found: collections.Counter[str] = collections.Counter()
    if not torch.cuda.is_available():
        yield found
        return
    shown = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if "synchronizing" not in str(message):
            return shown(message, category, filename, lineno, *args)
        if counter.counting:
            frames = [f for f in traceback.extract_stack()[:-2] if f"{os.sep}torch{os.sep}" not in f.filename]
            found[
                " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:]))
            ] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")


def python_calls(cfg: Config, data: ExperimentData, store: Any) -> dict[str, float]:
    """Python calls per step of the three loops (one epoch each, no other instrument)."""
    counts = {}
    for name in ("fit", "lightning", "bare"):
        window = StepWindow(PythonCalls())
        if name == "fit":
            train(cfg, data, store, callbacks=[window])
        elif name == "lightning":
            lightning_steps(cfg, data, store, 1, time.perf_counter, window)
        else:
            bare_steps(cfg, data, store, 1, time.perf_counter, window)
        counts[name] = round(window.counter.calls / window.steps, 1)
    return counts


def low(times: list[float]) -> float:
    """The 10th percentile: a step's own cost, with little of what other processes on a shared host add."""
    return statistics.quantiles(times, n=10)[0]


def timed(args: argparse.Namespace, root: Path, data: ExperimentData, store: Any) -> dict[str, float]:
    """ms per step of the three loops (`low`), each the least of `args.repeats` runs taken in turn (other
    processes on a shared host only ever add time). On the CPU the training thread's CPU time
    (the host's work), on a GPU wall time (waits for the device included)."""
    clock = time.perf_counter if args.cuda else time.thread_time
    runs: dict[str, list[float]] = {"fit": [], "lightning": [], "bare": []}
    for r in range(args.repeats):
        cfg = tiny_config(
            root / f"runs{r}", args.variant, "cuda" if args.cuda else "cpu", args.epochs, args.batch
        )
        timing = StepWindow(clock=clock)
        train(cfg, data, store, callbacks=[timing])
        runs["fit"].append(low(timing.step_s))
        runs["lightning"].append(low(lightning_steps(cfg, data, store, args.epochs, clock)))
        runs["bare"].append(low(bare_steps(cfg, data, store, args.epochs, clock)))
    return {name: round(1e3 * min(times), 3) for name, times in runs.items()}


def measure(args: argparse.Namespace, root: Path) -> dict:
    device = "cuda" if args.cuda else "cpu"
    data, store = tiny_data(root, args.variant, args.images)
    ms = timed(args, root, data, store)
    counter = StepSyncs()
    window = StepWindow(counter)
    with counter, counter.host_reads(), cuda_sync_warnings(counter) as cuda_syncs:
        train(
            tiny_config(root / "counted", args.variant, device, 1, args.batch),
            data,
            store,
            callbacks=[window],
        )
    calls = python_calls(tiny_config(root / "calls", args.variant, device, 1, args.batch), data, store)
    return {
        "ms_per_step": ms,
        "overhead_ms": round(ms["fit"] - ms["bare"], 3),
        "lightning_overhead_ms": round(ms["lightning"] - ms["bare"], 3),
        "syncs_per_step": round(sum(counter.calls.values()) / window.steps, 3),
        "aten_ops_per_step": round(counter.ops / window.steps, 1),
        "python_calls_per_step": calls,
        "syncs": dict(counter.calls.most_common()),
        "counted_steps": window.steps,
        "cuda_syncs_per_step": round(sum(cuda_syncs.values()) / window.steps, 3),
        "cuda_syncs": dict(cuda_syncs.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--variant", default="vit", help="model.variant: vit (probe / fine-tune) or an I-ViT's"
    )
    parser.add_argument("--images", type=int, default=640, help="training images (steps per epoch x batch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each loop, in turn (the least counts)"
    )
    parser.add_argument("--cuda", action="store_true", help="on the GPU (bf16), real syncs counted too")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as root:
        device = torch.device("cuda" if args.cuda else "cpu")
        report = {**environment(device), **measure(args, Path(root))}  # device, date, versions, command
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
