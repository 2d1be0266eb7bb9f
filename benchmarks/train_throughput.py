"""End-to-end training throughput against the same model's step on synthetic device tensors, in one run.

For each row (DeiT-Tiny linear probe, DeiT-Tiny full fine-tune, I-ViT-Ti frozen with the oracle's maps):
  step    img/s of one training step (forward + criterion + backward + AdamW) on synthetic tensors already on
          the device, bf16 autocast: the ceiling for this model; with `--profile-steps N` also its wall time
          and the device's busy time per step (`step_device_busy_ms`, kernels summed over N profiled steps):
          busy well under wall means the host, not the GPU, sets the step's pace;
  e2e     img/s of `lfi train` over a whole run on the real data: train images x epochs / wall time of the
          fit, with its validations, checkpoint writes and sanity check (their cadence: the config's trainer.*
          keys, or `--set`), for each data path asked (`--paths device loader`: the GPU-resident path of
          `lfi.data.gpu`, and the worker loaders decoding JPEGs).
The image cache is built before the timed runs (`lfi prepare`); its build time is recorded apart. Each run's
wall time is split by `FitClock` (host clock at Lightning's hooks): Lightning's and the strategy's set-up
(`before_s`: the model to the device, the optimizers and, as the schedule's length asks for the training
loader there, the training images to the device), set-up before the first step (`setup_s`: the training hooks'
start, the first batches, first uses on the device), validations (the first one also opens the validation
images), the epochs' edges (last step of an epoch to the first of the next:
epoch-end hooks, checkpoint copies, the loader's new epoch), the end of training (`end_s`: the last epoch's
hooks, its checkpoint copies), the strategy's teardown (`teardown_s`: waiting for the background checkpoint
writes, the module back to the CPU) and the steps (first step start to last step end of each epoch). The
device is drained at the end of each epoch's last step (the loss check at the epoch's end waits for it a
moment later anyway), so the GPU work the host queued ahead counts as steps, not as the edge or validation
after it. With `--profile-fit-steps N` (`FitProfile`), in a further fit of the same run but of 3 epochs (the
timed one stays unprofiled), N steps centred in the second epoch are timed and the same steps of the third
profiled: wall and device-busy ms per step, kernels launched per step, the top kernels, and the kernels whose
time the fit adds to the bare step's (`added_kernels`): which GPU work the fit adds, and whether the host or
the device sets its pace.

    python benchmarks/train_throughput.py --data DATA --weights deit_tiny_patch16_224.bf16.safetensors \\
        --store STORE --out results.json [--epochs 3] [--rows probe full ivit] [--paths device loader] \\
        [--profile-steps 3] [--profile-fit-steps 20] \\
        [--set trainer.check_val_every_n_epoch=5 trainer.checkpoint_every_n_epochs=5 trainer.sanity_val_steps=0]
    python benchmarks/train_throughput.py ... --cpu --limit-batches 2 --batch 32   # the CPU path, small
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profiling import (  # noqa: E402
    activities,
    added_kernels,
    breakdown_of,
    kernel_breakdown,
    launches,
    top_kernels,
)
from torch.profiler import profile  # noqa: E402

from lfi.config import load_config  # noqa: E402
from lfi.train.build import build_criterion, build_model  # noqa: E402
from lfi.train.data import ExperimentData, LfiDataModule, build_data  # noqa: E402
from lfi.train.engine import parameter_groups, train  # noqa: E402
from lfi.train.tasks import ClassificationTask  # noqa: E402

BASE = Path(__file__).resolve().parents[1] / "configs" / "study" / "tinyimagenet_deit_tiny.yaml"
ROWS = {
    "probe": ["model.variant=vit", "model.freeze_backbone=true", "teacher.name=none"],
    "full": ["model.variant=vit", "model.freeze_backbone=false", "teacher.name=none"],
    "ivit": ["model.variant=iq_ic_gc", "model.freeze_backbone=true", "teacher.name=oracle"],
}


def environment(device: torch.device) -> dict:
    import lightning
    import timm

    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


class FitClock(L.Callback):
    """Where a fit's wall time goes, from the host clock at Lightning's hooks (see the module docstring)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        parts = ("before_s", "setup_s", "steps_s", "validation_s", "epoch_edges_s", "end_s", "teardown_s")
        self.spent = dict.fromkeys(parts, 0.0)
        self.each: dict[str, list[float]] = {"validations_s": [], "edges_s": []}  # which one costs what
        self.collections: dict[int, list[float]] = {0: [], 1: [], 2: []}  # the garbage collector's passes
        self._collecting = 0.0

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.marks["setup"] = time.perf_counter()
        gc.callbacks.append(self._gc)

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._stop_timing_gc()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._stop_timing_gc()  # a failed fit skips the callbacks' teardown

    def _stop_timing_gc(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        """gc's callback: each collection's seconds by generation (inside whatever part it interrupts)."""
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            self.collections[info["generation"]].append(time.perf_counter() - self._collecting)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.marks["fit"] = time.perf_counter()
        self.spent["before_s"] = self.marks["fit"] - self.marks["setup"]

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: object, index: int
    ) -> None:
        now = time.perf_counter()
        if "last" not in self.marks:
            self.spent["setup_s"] = now - self.marks["fit"]
        elif index == 0:
            self._epoch_done(now)
        if index == 0:
            self.marks["epoch"] = now

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            _sync(module.device)  # the steps' queued GPU work is step time (see the module docstring)
        self.marks["last"] = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.marks["val_start"] = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        took = time.perf_counter() - self.marks.pop("val_start")
        self.spent["validation_s"] += took
        self.each["validations_s"].append(took)
        self.marks["val"] = self.marks.get("val", 0.0) + took  # not counted again in the epoch's edge

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.marks["train_end"] = time.perf_counter()
        self._epoch_done(self.marks["train_end"], edge="end_s")

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.spent["teardown_s"] = time.perf_counter() - self.marks["train_end"]

    def _epoch_done(self, now: float, edge: str = "epoch_edges_s") -> None:
        self.spent["steps_s"] += self.marks["last"] - self.marks["epoch"]
        took = now - self.marks["last"] - self.marks.pop("val", 0.0)
        self.spent[edge] += took
        if edge == "epoch_edges_s":
            self.each["edges_s"].append(took)

    def report(self, total: float) -> dict[str, float]:
        """The split of a fit of `total` seconds; `other_s`: outside the hooks (the loggers' set-up: the
        TensorBoard import in a process's first fit; the teardown hooks, the loggers' last flush);
        `validations_s`, `edges_s`: each validation and epoch edge in turn (the first validation opens the
        validation images; edges and validations that write a checkpoint stand out); `gc{0,1,2}_s`: the seconds
        of the garbage collector's passes of each generation, wherever they fell, and `gc2_each_s` each full
        pass (`lfi.train.engine.frozen_heap` keeps the objects alive at the fit's start out of them)."""
        out = {k: round(v, 3) for k, v in self.spent.items()}
        each = {k: [round(v, 4) for v in values] for k, values in self.each.items()}
        gc_s = {f"gc{g}_s": round(sum(took), 4) for g, took in self.collections.items()}
        gc_full = {"gc2_each_s": [round(took, 4) for took in self.collections[2]]}
        return {**out, "other_s": round(total - sum(self.spent.values()), 3), **each, **gc_s, **gc_full}


class FitProfile(L.Callback):
    """`steps` consecutive training steps inside the fit, away from the epochs' edges: timed in the second
    epoch (1; the first warms up), then the same steps of the third profiled (torch.profiler slows the host,
    so the wall time per step comes from the unprofiled window). Neither follows a checkpoint write unless
    every epoch writes one (a background write competes with the training thread). A window runs from the
    end of the step before its first to the end of its last (`steps` whole step cycles, the next batch's
    making included), centred in the epoch; on a GPU the device is drained at both ends, so the time covers
    the steps' work."""

    EPOCHS = 3  #: the fewest epochs of a fit it can measure

    def __init__(self, steps: int, cuda: bool) -> None:
        self.steps, self.cuda = steps, cuda
        self.first, self.epoch = 0, 1
        self.began = 0.0
        self.wall_s: dict[int, float] = {}
        self.profiler: profile | None = None
        self.breakdown: dict | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        batches = int(trainer.num_training_batches)
        if trainer.max_epochs < self.EPOCHS or self.steps + 1 > batches:
            raise ValueError(
                f"--profile-fit-steps {self.steps}: needs {self.EPOCHS} epochs or more (has "
                f"{trainer.max_epochs}) and more train batches per epoch than steps profiled (has {batches})"
            )
        self.first = max(1, (batches - self.steps) // 2)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        index, epoch = args[-1], trainer.current_epoch
        if epoch not in (self.epoch, self.epoch + 1):
            return
        if index == self.first - 1:
            _sync(module.device)
            if epoch > self.epoch:
                self.profiler = profile(activities=activities(self.cuda))
                self.profiler.start()
            self.began = time.perf_counter()
        elif index == self.first + self.steps - 1:
            _sync(module.device)
            self.wall_s[epoch] = time.perf_counter() - self.began
            if self.profiler is not None:
                self.profiler.stop()
                self.breakdown = breakdown_of(self.profiler, self.steps, self.cuda)
                self.profiler = None

    def report(self, bare: dict) -> dict:
        """Wall and device-busy ms per step of the fit's steps, their top kernels and those they add to the
        `bare` step's breakdown (`kernel_breakdown`)."""
        if self.breakdown is None:
            raise RuntimeError("--profile-fit-steps: the fit ended before its profiled steps")
        per_step = {e: round(1e3 * s / self.steps, 3) for e, s in self.wall_s.items()}
        return {
            "epochs": [self.epoch, self.epoch + 1],
            "first_step": self.first,
            "steps": self.steps,
            "wall_ms": per_step[self.epoch],
            "profiled_wall_ms": per_step[self.epoch + 1],
            "device_busy_ms": round(self.breakdown["total_us"] / 1e3, 3),
            "kernels_per_step": launches(self.breakdown),
            "bare_kernels_per_step": launches(bare),
            "top_kernels": top_kernels(self.breakdown),
            "added_kernels": added_kernels(self.breakdown, bare),
        }


def step_rate(
    cfg, device: torch.device, steps: int, warmup: int, profiled: int = 0
) -> tuple[float, dict | None]:
    """img/s of the training step on synthetic device tensors (the model's ceiling), and with `profiled` > 0
    its `kernel_breakdown` over that many profiled steps after the timed ones (`total_us`: the device's busy
    time per step; near the step's wall time the device is the bound, well under it the host is)."""
    model = build_model(cfg, 200).to(device)
    data = ExperimentData(None, None, {}, [str(i) for i in range(200)])
    criterion = build_criterion(cfg, model, data).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.optim.lr)
    b, s = cfg.data.batch_size, cfg.data.img_size
    grid = model.patch_grid((s, s))
    maps = torch.rand(b, *grid, device=device)
    batch = {
        "image": torch.randn(b, 3, s, s, device=device),
        "label": torch.randint(0, 200, (b,), device=device),
        "map": maps / maps.sum((1, 2), keepdim=True),
        "map_valid": torch.ones(b, dtype=torch.bool, device=device),
    }
    task = ClassificationTask()
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision.startswith("bf16")
    )

    def step() -> None:
        with autocast:
            loss = criterion(task.forward(model, batch), batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    rate = steps * b / (time.perf_counter() - start)
    return rate, kernel_breakdown(step, profiled, device.type == "cuda") if profiled else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="data root holding tiny-imagenet-200/ (train shard 00 + val)"
    )
    parser.add_argument(
        "--weights", required=True, help="DeiT-Tiny safetensors (the bf16 file travels to the GPU)"
    )
    parser.add_argument("--store", help="oracle interaction store of the training images (for the ivit row)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--paths", nargs="+", default=["device", "loader"], choices=["device", "loader"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=15)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="profiled bare steps per row: the device's busy time per step beside its wall time",
    )
    parser.add_argument(
        "--profile-fit-steps",
        type=int,
        default=0,
        help="timed, then profiled, steps inside a further fit of each row and path (`FitProfile`): wall and "
        "device-busy ms per step, top kernels beside the bare step's (profiled over --profile-steps, else as "
        "many steps)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="measure the CPU path (small: see --limit-batches)"
    )
    parser.add_argument("--limit-batches", type=int, help="train batches per epoch (the CPU path)")
    parser.add_argument("--cache-dir", default="/tmp/lfi-cache")
    parser.add_argument("--runs", default="/tmp/lfi-throughput")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every row"
    )
    args = parser.parse_args()

    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    report = {**environment(device), "rows": {}}
    out = Path(args.out)
    for row in args.rows:
        overrides = [
            *ROWS[row], f"data.root={args.data}", f"model.checkpoint={args.weights}", f"data.batch_size={args.batch}",
            f"data.num_workers={args.workers}", f"data.cache_dir={args.cache_dir}", f"output_dir={args.runs}", "output_dir_allow_outside=true",
            f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={device.type}",
            "trainer.enable_progress_bar=false", "trainer.log_maps_every_n_epochs=0",
            *([f"teacher.store={args.store}"] if row == "ivit" else []),
            *([f"trainer.limit_train_batches={args.limit_batches}", "trainer.limit_val_batches=1", "data.test_limit=64"]
              if args.limit_batches else []),
            *args.set,
        ]  # fmt: skip
        cfg = load_config(BASE, overrides)
        rate, bare = step_rate(cfg, device, args.steps, 5, args.profile_steps or args.profile_fit_steps)
        result = {"overrides": overrides, "step_img_s": round(rate, 1)}
        if bare is not None:
            busy = round(bare["total_us"] / 1e3, 2)
            result |= {"step_ms": round(1e3 * args.batch / rate, 2), "step_device_busy_ms": busy,
                       "step_kernels": top_kernels(bare)}  # fmt: skip
        for path in args.paths:
            run_cfg = load_config(
                BASE, [*overrides, f"data.gpu_pipeline={path == 'device'}", f"experiment={row}-{path}"]
            )
            if path == "device":
                start = time.perf_counter()
                LfiDataModule(run_cfg, build_data(run_cfg)).prepare_caches()
                result["cache_build_s"] = round(time.perf_counter() - start, 1)
            clock = FitClock()
            run = train(run_cfg, callbacks=[clock])
            images = run.metrics["global_step"] * args.batch  # every step trains one full batch (drop_last)
            rate = images / run.metrics["train_seconds"]
            result[path] = {
                "e2e_img_s": round(rate, 1),
                "ratio_to_step": round(rate / result["step_img_s"], 3),
                "train_seconds": run.metrics["train_seconds"],
                "epochs": run.metrics["epochs"],
                "train_images": images,
                "best_val": run.metrics["best_val"],
                "split": clock.report(run.metrics["train_seconds"]),
            }
            if args.profile_fit_steps:  # a fit of its own: the profiler's cost stays out of the timed one
                profiled = FitProfile(args.profile_fit_steps, device.type == "cuda")
                # FitProfile's epochs 1 and 2 are all it needs (cadences and schedule change nothing there)
                epochs = f"trainer.max_epochs={FitProfile.EPOCHS}"
                name = f"experiment={row}-{path}-profiled"
                train(load_config(BASE, [*overrides, f"data.gpu_pipeline={path == 'device'}", epochs, name]),
                      callbacks=[profiled])  # fmt: skip
                result[path]["fit_profile"] = profiled.report(bare)
            print(row, path, json.dumps(result[path]), flush=True)
        report["rows"][row] = result
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
