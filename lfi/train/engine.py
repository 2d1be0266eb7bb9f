"""One training engine for every task, on Lightning: devices, bf16, DDP, checkpoints, exact resume.

    result = train(load_config("configs/table1/ivit_s.yaml"))          # or: lfi train configs/table1/ivit_s.yaml

`LfiModule` runs `task.forward` -> `criterion` (one weight_dict) in training and `task.evaluate` in
validation; `train` builds everything from the config (`lfi.train.build`), fits, evaluates every test set
and fills the run folder (`lfi.train.runs`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import save_file
from torch import nn

from lfi.config import Config, save_config
from lfi.files import atomic_path
from lfi.metrics.classification import cross_domain_summary, write_metrics
from lfi.train.build import Built, build
from lfi.train.checkpoint_writer import CheckpointWriteError, CheckpointWriter, shared_writer
from lfi.train.data import ExperimentData, Transform
from lfi.train.progress import progress_callbacks
from lfi.train.runs import RunFiles, check_run_folder, hold_run_folder
from lfi.train.signals import StopOnSignal
from lfi.train.tasks import step_losses


class NonFiniteLoss(ValueError):
    """A training loss became NaN or infinite: the run stops with this error instead of finishing."""


class LfiModule(L.LightningModule):
    """The student of any task and its losses. Logs train/{term}_step every trainer.log_every_n_steps global
    steps (this process's value, written at the epoch's end or the next checkpoint: `flush_step_logs`),
    train/{term} per epoch (the mean over every process, reduced once per epoch) and val/{metric} per
    validation."""

    def __init__(self, cfg: Config, built: Built) -> None:
        super().__init__()
        self.cfg, self.task = cfg, built.task
        self.model, self.criterion = built.model, built.criterion
        self.datamodule = built.datamodule
        self.evaluator = None
        self.consumed_batches = 0
        # the epoch's loss sums, accumulated on the device (two small ops per step, no host sync), and its
        # step count on the host
        self.loss_names: list[str] = []
        self.register_buffer("loss_sums", torch.zeros(0), persistent=False)
        self.loss_steps = 0
        self._epoch_means: tuple[int, dict[str, float]] | None = None
        self.step_logs: dict[int, torch.Tensor] = {}  # global step -> (terms,) on the device, not yet logged

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = step_losses(self.task, self.model, self.criterion, batch)
        # counted here, not in on_train_batch_end: a step checkpoint is written by the callbacks' hook first
        self.consumed_batches = batch_idx + 1
        if not self.loss_names:
            self.loss_names = list(losses)
            self.loss_sums = torch.zeros(len(self.loss_names), device=losses["loss"].device)
        values = torch.stack([losses[name].detach().float() for name in self.loss_names])
        self.loss_sums += values
        self.loss_steps += 1
        # The step's terms stay on the device until the next read that waits for it anyway (`flush_step_logs`):
        # Lightning's self.log would read them at its logging step, a wait for the GPU's queue every
        # log_every_n_steps steps. Gradient accumulation: the step's last batch holds it.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.step_logs[self.global_step] = values
        # a terminal's bar reads the loss at the same cadence (`StepBar`); never prog_bar=True, which reads it
        # at every step
        if self.trainer.progress_bar_callback is not None:
            self.log("train/loss_step", values[-1], on_step=True, logger=False)
        return losses["loss"]

    def flush_step_logs(self) -> None:
        """Writes the held step values, train/{term}_step at their global steps, to every logger: one read."""
        if not self.step_logs:
            return
        rows = torch.stack(list(self.step_logs.values())).tolist()
        for step, row in zip(self.step_logs, rows, strict=True):
            metrics = {f"train/{n}_step": v for n, v in zip(self.loss_names, row, strict=True)}
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)
        self.step_logs.clear()

    def reduced_loss_sums(self) -> torch.Tensor:
        """(len(loss_names) + 1,) this epoch's loss sums and step count so far, summed over every process
        (a collective: call it on every process). Raises NonFiniteLoss if a loss was NaN or infinite."""
        sums = torch.cat([self.loss_sums, self.loss_sums.new_full((1,), self.loss_steps)])
        if len(self.loss_sums):
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        # NaN and inf survive in the sums, so one check (one host sync) covers every step since the last
        if not bool(torch.isfinite(sums).all()):
            bad = [n for n, v in zip(self.loss_names, sums.tolist(), strict=False) if not math.isfinite(v)]
            raise NonFiniteLoss(
                f"{self.cfg.run_dir}: non-finite training loss ({', '.join(bad)}) in epoch {self.current_epoch}: "
                "the run is stopped, not finished (no metrics.json), and no checkpoint holds that step. "
                "Lower optim.lr or the loss weights and train into a new experiment"
            )
        return sums

    def epoch_losses(self) -> dict[str, float]:
        """This epoch's mean of every loss term over every process (one reduction per epoch)."""
        if self._epoch_means is None or self._epoch_means[0] != self.current_epoch:
            sums = self.reduced_loss_sums()
            means = {
                f"train/{n}": float(v)
                for n, v in zip(self.loss_names, sums[:-1] / sums[-1].clamp_min(1), strict=True)
            }
            self._epoch_means = (self.current_epoch, means)
        return self._epoch_means[1]

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.epoch_losses(), sync_dist=False)  # already reduced
        self.flush_step_logs()  # the epoch's means have just waited for the device
        self.loss_sums.zero_()
        self.loss_steps = 0

    def on_train_epoch_start(self) -> None:
        self.consumed_batches = 0

    def on_train_end(self) -> None:
        self.flush_step_logs()  # a run stopped by max_steps inside an epoch

    def on_validation_epoch_start(self) -> None:
        self.evaluator = self.task.evaluator()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.task.evaluate(self.model, batch, self.evaluator)

    def on_validation_epoch_end(self) -> None:
        metrics = self.evaluator.compute()  # already reduced over every process
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items() if k != "n"}, sync_dist=False)
        self.evaluator = None

    # exact resume: where in the epoch the checkpoint was taken, the global random state and the epoch's
    # loss sums so far (summed over the processes: on resume rank 0 carries them, so the reduction of the
    # epoch's means at its end counts every step once, whatever the number of processes)
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush_step_logs()  # a resume from this checkpoint would not log them again
        checkpoint["lfi_resume"] = {
            "epoch": self.current_epoch,
            "consumed_batches": self.consumed_batches,
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loss_names": list(self.loss_names),
            "loss_sums": self.reduced_loss_sums().cpu(),  # a NaN loss stops here: no checkpoint holds it
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lfi_resume")
        if state is None:
            return
        self.datamodule.resume_at(state["epoch"], state["consumed_batches"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.loss_names = list(state.get("loss_names", []))
        # (terms + 1,): the sums and, last, the step count; absent in checkpoints of earlier versions, empty
        # in theirs taken before the first step
        sums = state.get("loss_sums")
        if sums is None or not len(sums):
            sums = torch.zeros(len(self.loss_names) + 1)
        if not self.trainer.is_global_zero:
            sums = torch.zeros_like(sums)
        self.loss_sums, self.loss_steps = sums[:-1].to(self.device), int(sums[-1])

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over parameter groups (`parameter_groups`), with the schedule of cfg.optim."""
        o = self.cfg.optim
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.cfg), lr=o.lr, betas=tuple(o.betas))
        if o.schedule == "step":
            drop = o.lr_drop or self.trainer.max_epochs + 1
            schedule = torch.optim.lr_scheduler.StepLR(optimizer, drop, gamma=0.1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = (
            round(o.warmup_epochs * total / self.trainer.max_epochs) if self.trainer.max_epochs > 0 else 0
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, total, warmup, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def evaluate(
    model: nn.Module, task: Any, loader: Any, device: torch.device | str, progress: str | None = None
) -> dict[str, float]:
    """The task's metrics (top-1 / top-5, or COCO AP) of `model` over one loader, on this process; a
    progress bar titled `progress` when given."""
    was_training = model.training
    model.eval()
    evaluator = task.evaluator()
    if progress is not None:
        from tqdm import tqdm

        loader = tqdm(loader, desc=progress, unit="batch")
    for batch in loader:
        task.evaluate(model, move_data_to_device(batch, device), evaluator)
    model.train(was_training)
    return evaluator.compute(sync=False)  # this process alone (rank 0 evaluates the test sets by itself)


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> min_ratio at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup  # never 0, so the first step already moves the weights
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Trainable parameters in groups with their own learning rates: the parameters the conversion added
    (P'_q, gates: optim.lr_interaction), the pretrained backbone when it trains (optim.lr_backbone, e.g.
    DETR's CNN) and the rest, the task head (optim.lr); None falls back to optim.lr. Weight decay on matrices
    only, never on biases, norms, position embeddings or tokens."""
    o = cfg.optim
    added = {id(p) for p in model.interaction_parameters()}
    backbone = {id(p) for p in _backbone(model).parameters()} - added
    skip = {f"vit.{n}" for n in getattr(getattr(model, "vit", None), "no_weight_decay", lambda: set())()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = "interaction" if id(p) in added else "backbone" if id(p) in backbone else "head"
        decay = p.ndim >= 2 and name not in skip
        groups.setdefault((role, decay), []).append(p)
    lrs = {"interaction": o.lr_interaction, "head": o.lr, "backbone": o.lr_backbone}
    lrs = {role: o.lr if lr is None else lr for role, lr in lrs.items()}
    return [
        {
            "params": params,
            "lr": lrs[role],
            "weight_decay": o.weight_decay if decay else 0.0,
            "name": f"{role}" if decay else f"{role}_no_decay",
        }
        for (role, decay), params in sorted(groups.items())
    ]


def _backbone(model: nn.Module) -> nn.Module:
    """I-ViT: the ViT without its head; I-DETR: the CNN backbone."""
    if hasattr(model, "vit"):
        return nn.ModuleList(
            [m for name, m in model.vit.named_children() if m is not model.vit.get_classifier()]
        )
    return model.core.backbone


class LearningRates(L.Callback):
    """Every parameter group's learning rate in the loggers, lr-<optimizer>/<group name>, every
    trainer.log_every_n_steps steps. Not Lightning's LearningRateMonitor: it also puts each rate in
    trainer.callback_metrics as a tensor made on the GPU from a Python float, a copy from pageable memory that
    waits for the GPU's queue to drain, one per group at every logging step; nothing here reads them."""

    def __init__(self) -> None:
        self.logged_step = -1  # gradient accumulation: several batches share a step, logged once

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps or step == self.logged_step or not trainer.loggers:
            return
        self.logged_step = step
        rates = {
            f"lr-{type(opt).__name__}/{group.get('name', f'pg{i}')}": group["lr"]
            for opt in trainer.optimizers
            for i, group in enumerate(opt.param_groups)
        }
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=step)


class EpochCSV(L.Callback):
    """metrics.csv in the run folder: one row per epoch (epoch, step, every epoch-level train/ and val/
    metric, lr, wall seconds since the run began, resumes included; val/ only in the rows of epochs that
    validated). A resumed run drops the rows of epochs it redoes, then appends."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.perf_counter()
        self.validated = -1  # the last epoch that ran validation (Lightning keeps its val/ metrics after it)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = trainer.current_epoch

    def state_dict(self) -> dict[str, float]:
        return {"wall_s": time.perf_counter() - self.start}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.start = time.perf_counter() - state_dict.get("wall_s", 0.0)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # here, not in on_fit_start: Lightning restores current_epoch from the checkpoint after on_fit_start
        if trainer.is_global_zero and self.path.is_file():
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < trainer.current_epoch]
            self._write(rows)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= {k: round(v, 6) for k, v in module.epoch_losses().items()}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and self.validated == trainer.current_epoch:
                row[key] = round(float(value), 6)
        groups = trainer.optimizers[0].param_groups
        row |= {f"lr/{g['name']}": g["lr"] for g in groups if not g.get("name", "").endswith("_no_decay")}
        row["wall_s"] = round(time.perf_counter() - self.start, 2)
        rows = []
        if self.path.is_file():
            with self.path.open() as f:
                rows = list(csv.DictReader(f))
        self._write([*rows, row])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)


class ProcessCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written by this process's writer process while training goes on
    (`lfi.train.checkpoint_writer`; a thread would still hold the training thread, as torch's zip writer keeps the
    GIL). The training thread copies the state's tensors to shared memory (a point-in-time snapshot: one wait for
    the GPU, no extra device memory) and goes on; removals (a superseded best checkpoint) queue behind the writes,
    so no file is written after its removal. The end of fit waits for every write and raises a failed one; where
    the fit itself failed (an error, a signal), its exception is the one raised and a failed write a warning."""

    @property
    def writer(self) -> CheckpointWriter:
        return shared_writer()  # this process's (a pickled copy in a ddp_spawn rank takes that rank's)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (it writes local files)")
        self.writer.save(checkpoint, path)

    def remove_checkpoint(self, path: Any) -> None:
        self.writer.remove(path)

    def teardown(self) -> None:
        # Lightning tears down inside its handler of the fit's exception
        failed = sys.exc_info()[1] is not None
        try:
            self.writer.release()
        except CheckpointWriteError as error:
            if not failed:
                raise
            warnings.warn(f"{error} (beside the error that stopped the fit)", RuntimeWarning, stacklevel=2)


class LastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt (full state, for --resume) at the end of every `period`-th epoch and of the final
    one (max_epochs). Each write copies the whole state off the GPU (`ProcessCheckpointIO` then writes it
    while training goes on), so short epochs may take a longer period; a run stopped in between resumes from
    the last written one, exactly as from any other."""

    def __init__(self, dirpath: Path, period: int) -> None:
        # the arguments (hence Lightning's state key) of the every-epoch checkpoint: old runs resume
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)  # fmt: skip
        self.period = period

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.period == 0 or epoch == trainer.max_epochs:
            super().on_train_epoch_end(trainer, module)


class ValidateFinalEpoch(L.Callback):
    """Validation every trainer.check_val_every_n_epoch epochs, and always after the final one (max_epochs),
    which Lightning alone skips when max_epochs is not a multiple of the period."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 == trainer.max_epochs:
            trainer.check_val_every_n_epoch = 1


def build_trainer(cfg: Config, files: RunFiles, monitor: str, callbacks: list | None = None) -> L.Trainer:
    """A Trainer writing the run folder: checkpoints/last.ckpt every trainer.checkpoint_every_n_epochs epochs,
    after the final one (and every trainer.checkpoint_every_n_steps), best-epoch=N.ckpt (weights only) by
    val/{monitor}, metrics.csv, tb/; checkpoint files are written by a writer process (`ProcessCheckpointIO`).
    Validation every trainer.check_val_every_n_epoch epochs and after the
    final one; trainer.sanity_val_steps validation batches before training (0: none)."""
    t = cfg.trainer
    last = LastCheckpoint(files.checkpoints, t.checkpoint_every_n_epochs)
    # weights only: --resume reads last.ckpt, and the optimizer's state would double or triple every write
    best = ModelCheckpoint(dirpath=files.checkpoints, filename="best-{epoch:03d}", monitor=f"val/{monitor}", mode="max",
                           save_top_k=1, save_weights_only=True, enable_version_counter=False)  # fmt: skip
    extra = []
    if t.checkpoint_every_n_steps:
        extra.append(ModelCheckpoint(dirpath=files.checkpoints, filename="last", every_n_train_steps=t.checkpoint_every_n_steps,
                                     save_top_k=1, enable_version_counter=False))  # fmt: skip
    # the bar on a terminal (its loss read at the logging cadence), plain lines in a log
    bar, lines = progress_callbacks(t.enable_progress_bar, every=t.log_every_n_steps)
    ours = [
        last,
        best,
        *extra,
        ValidateFinalEpoch(),
        LearningRates(),
        EpochCSV(files.metrics_csv),
        *lines,
    ]
    return L.Trainer(
        default_root_dir=files.root,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision="32-true" if t.precision == "32" else t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        num_sanity_val_steps=t.sanity_val_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        enable_progress_bar=bar,
        enable_model_summary=False,
        use_distributed_sampler=False,  # LfiDataModule shards by rank itself (exact resume needs its sampler)
        logger=TensorBoardLogger(files.root, name="tb", version="", default_hp_metric=False),
        callbacks=[*ours, *(callbacks or [])],
        plugins=[ProcessCheckpointIO()],
    )


@dataclass
class RunResult:
    """What `train` hands back: the trained module (rank 0 holds the final weights), metrics, run folder."""

    module: LfiModule
    metrics: dict[str, Any]
    run_dir: Path


def resolve_resume(files: RunFiles, resume: str | bool | None) -> str | None:
    """--resume: True -> the run folder's checkpoints/last.ckpt (must exist); a path -> that file."""
    if not resume:
        return None
    path = files.last_checkpoint if resume is True else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {path} (a run writes checkpoints/last.ckpt every epoch)"
        )
    return str(path)


def quiet_lightning() -> None:
    """Lightning's tips and adverts off; its real warnings stay."""
    os.environ.setdefault("LITLOGGER_DISABLE", "1")
    for pattern in (".*litlogger.*", ".*LitLogger.*", ".*does not have many workers.*", ".*tensorboardX.*",
                    ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*"):  # fmt: skip
        warnings.filterwarnings("ignore", message=pattern)
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def train(
    cfg: Config,
    data: ExperimentData | None = None,
    store: Any | None = None,
    resume: str | bool | None = None,
    train_transforms: Transform | None = None,
    eval_transforms: Transform | None = None,
    callbacks: list | None = None,
) -> RunResult:
    """Train cfg's student, evaluate it on every test set and fill the run folder (`lfi.train.runs`).

    A finished run folder is refused, and so is one with a checkpoint unless `resume` (`check_run_folder`);
    one process at a time writes a run folder (`hold_run_folder`). SIGINT / SIGTERM stop the run at the end of
    the step with a checkpoint and raise `Interrupted` (`lfi.train.signals`); a NaN or infinite loss raises
    NonFiniteLoss. Either way no metrics.json is written.
    """
    quiet_lightning()
    files = RunFiles(cfg.run_dir)
    check_run_folder(files, bool(resume))  # before the data are built: fail fast
    ckpt_path = resolve_resume(files, resume)
    stop = StopOnSignal(files.last_checkpoint)
    start_writer(cfg.trainer.strategy)
    with stop:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        built = build(cfg, data, store, train_transforms, eval_transforms)
        module = LfiModule(cfg, built)
        trainer = build_trainer(cfg, files, built.task.monitor, [*(callbacks or []), stop])
        with hold_run_folder(files) if trainer.is_global_zero else contextlib.nullcontext():
            check_run_folder(files, bool(resume))  # again under the lock: another writer may have just ended
            if trainer.is_global_zero:
                save_config(cfg, files.config)
            with frozen_heap():  # through the evaluation: the full pass it puts off comes after `train`
                start = time.perf_counter()
                trainer.fit(module, datamodule=built.datamodule, ckpt_path=ckpt_path, weights_only=True)
                train_s = time.perf_counter() - start
                stop.raise_if_signalled()
                metrics: dict[str, Any] = {}
                if trainer.is_global_zero:
                    metrics = _finish(cfg, module, trainer, built, files, train_s)
    return RunResult(module, metrics, files.root)


def start_writer(strategy: str) -> None:
    """Start the checkpoint writer process now, where this process will save, so that its start (a fresh
    interpreter importing torch: seconds) overlaps the build and the fit; a short fit that started it at its first
    save waited for it at its end. Not on ranks other than 0 (torchrun, SLURM, Lightning's ddp launcher set their
    rank variables), on nodes above the first, nor where the ranks are spawned or forked from this process
    (`strategy` ddp_spawn, ddp_fork, ddp_notebook: rank 0 starts its own at its first save)."""
    spawned = any(word in strategy for word in ("spawn", "fork", "notebook"))
    if rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0" and not spawned:
        shared_writer().start()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive now out of the cyclic garbage collector's passes until the block ends (`gc.freeze`).

    torch, Lightning, transformers and the built run hold about half a million objects, and each full collection
    walks them all: 0.43 s on a 2-core CPU (0.1 ms once frozen), at a moment set by allocation counts, a tenth
    of a short fit. The young generations are collected first (cheap: the build's garbage goes); objects made in
    the block are collected as usual. The full pass is put off, not saved: the collector's counts are not reset,
    so the next one after the block walks everything again (a CLI run has ended by then). A heap the caller froze
    is left as it is, frozen, and nothing more is frozen (the caller's freeze would keep this run's cycles)."""
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _finish(
    cfg: Config, module: LfiModule, trainer: L.Trainer, built: Built, files: RunFiles, train_s: float
) -> dict:
    """Evaluate on every test set (rank 0) and write model.safetensors and metrics.json."""
    start = time.perf_counter()
    device = trainer.strategy.root_device  # Lightning hands the module back on the CPU after fit
    model = module.model.to(device)
    bars = trainer.progress_bar_callback is not None  # a terminal's bar (a log gets no tqdm redraws)
    tests = {
        name: evaluate(model, built.task, loader, device, f"test {name}" if bars else None)
        for name, loader in built.datamodule.test_loaders().items()
    }
    if cfg.task == "classification":
        tests |= cross_domain_summary(tests)
    best = trainer.checkpoint_callbacks[1].best_model_score
    metrics = {
        "task": cfg.task,
        "experiment": cfg.experiment,
        "paper_row": cfg.paper_row,
        "teacher": cfg.teacher.name,
        "variant": cfg.model.variant,
        "seed": cfg.seed,
        "classes": built.data.classes,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "monitor": f"val/{built.task.monitor}",
        "best_val": None if best is None else round(float(best), 4),
        "best_epoch": _best_epoch(trainer),
        "test": tests,
        "train_seconds": round(train_s, 2),
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}
    with atomic_path(files.weights) as tmp:
        save_file(weights, str(tmp))
    write_metrics(metrics, files.metrics)  # last: a run is finished once metrics.json exists
    return metrics


def _best_epoch(trainer: L.Trainer) -> int | None:
    """The epoch of the best validation score, from the best checkpoint's name (best-epoch=NNN.ckpt)."""
    found = re.search(r"epoch=(\d+)", Path(trainer.checkpoint_callbacks[1].best_model_path).name)
    return int(found.group(1)) if found else None
