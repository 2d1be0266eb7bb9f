"""Nothing lost, nothing silent (issue 32 items 1, 4, 6; issue 33 item 2): metrics.csv after a resume, one
writer per run folder, finished and resumable folders not restarted by mistake, result files written whole,
a non-finite loss stops the run, SIGTERM / SIGINT save a checkpoint and say how to continue."""

from __future__ import annotations

import csv
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lfi.config import load_config, save_config
from lfi.metrics.classification import write_metrics
from lfi.store.shards import InteractionStore
from lfi.train.engine import EpochCSV, NonFiniteLoss, train
from lfi.train.sweep import write_summary
from tests.train.conftest import tiny_config, tiny_data, write_store

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 3  # 48 images at batch 16
EPOCHS = 3


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without wall_s (the one column that measures the machine, not the run); [] if none yet."""
    if not (run_dir / "metrics.csv").is_file():
        return []
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


class KillAt(L.Callback):
    """Stop the run like a killed job once `step` optimizer steps are done (checkpointed every step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated kill after step {self.step}")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted run (checkpoint every step, as the killed runs) and its store, shared by the drills."""
    tmp = tmp_path_factory.mktemp("straight")
    data = tiny_data()
    store = write_store(data, tmp / "store")
    run = train(tiny_config(tmp, epochs=EPOCHS, trainer={"checkpoint_every_n_steps": 1}), data, store)
    return run.run_dir, store.root


# one mid-epoch step of each epoch (a step that ends an epoch resumes at an epoch start), drawn with a fixed seed
_DRAW = random.Random(32)
MID_EPOCH = [e * STEPS_PER_EPOCH + _DRAW.randrange(1, STEPS_PER_EPOCH) for e in range(EPOCHS)]


@pytest.mark.parametrize(
    "kill_at",
    [pytest.param(s, marks=() if s // STEPS_PER_EPOCH == 1 else pytest.mark.slow) for s in MID_EPOCH],
)  # epoch 1's draw in the quick suite, every epoch's with -m slow
def test_metrics_csv_after_kill_and_resume_equals_uninterrupted(straight, tmp_path, kill_at):
    """Killed at a mid-epoch step and resumed: metrics.csv equals the uninterrupted run's row for row (the
    resumed epoch's train averages cover the whole epoch; the rows of earlier epochs are kept). A plain
    `train` into the killed run's folder is refused: it would throw the checkpoint away."""
    straight_dir, store_root = straight
    data, store = tiny_data(), InteractionStore(store_root)
    cfg = tiny_config(tmp_path, epochs=EPOCHS, trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg, data, store, callbacks=[KillAt(kill_at)])
    assert len(csv_rows(cfg.run_dir)) == kill_at // STEPS_PER_EPOCH  # the epochs finished before the kill
    with pytest.raises(FileExistsError, match=r"unfinished run .*--resume"):
        train(cfg, data, store)
    train(cfg, data, store, resume=True)
    assert csv_rows(cfg.run_dir) == csv_rows(straight_dir)
    wall = [float(r["wall_s"]) for r in csv.DictReader((cfg.run_dir / "metrics.csv").open())]
    assert wall == sorted(wall)  # the wall clock goes on from the checkpoint's, it does not restart at 0
    # the step logs held on the device were written with the checkpoint: every step once, none lost
    assert step_losses_logged(cfg.run_dir) == step_losses_logged(straight_dir)


def step_losses_logged(run_dir: Path) -> list[tuple[int, float]]:
    """(step, value) of every train/loss_step event in the run's TensorBoard folder, all its files."""
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    logged = sorted((e.step, e.value) for e in events.Scalars("train/loss_step"))
    assert [step for step, _ in logged] == list(range(EPOCHS * STEPS_PER_EPOCH))  # log_every_n_steps=1
    return logged


def same_run(run_dir: Path, straight_dir: Path) -> None:
    """The weights, test metrics and metrics.csv of `run_dir` equal the uninterrupted run's."""
    a, b = load_file(straight_dir / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (straight_dir, run_dir)]
    assert metrics[0]["test"] == metrics[1]["test"] and metrics[0]["global_step"] == metrics[1]["global_step"]
    assert csv_rows(run_dir) == csv_rows(straight_dir)


def test_plain_train_into_a_finished_folder_is_refused(straight):
    straight_dir, store_root = straight
    before = {name: (straight_dir / name).read_bytes() for name in ("metrics.json", "metrics.csv")}
    cfg = tiny_config(straight_dir.parent, epochs=EPOCHS, trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(FileExistsError, match=r"is finished .*new experiment name"):
        train(cfg, tiny_data(), InteractionStore(store_root))
    assert {name: (straight_dir / name).read_bytes() for name in before} == before


def test_a_folder_without_checkpoint_starts_afresh(straight, tmp_path):
    """A run killed before its first checkpoint (or a sweep's train.log alone) holds nothing to resume."""
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "train.log").write_text("$ lfi train ...\n")
    (cfg.run_dir / "metrics.csv").write_text("epoch,step\n0,3\n")
    run = train(cfg, tiny_data(), InteractionStore(straight[1]))
    assert run.metrics["global_step"] == STEPS_PER_EPOCH and len(csv_rows(cfg.run_dir)) == 1


def test_a_second_trainer_is_refused_while_one_writes_the_folder(straight, tmp_path):
    """A process holding <run>/.lock (another trainer) makes `train` fail at once, naming the folder; the
    kernel drops the lock with its holder, and the folder can then be trained."""
    cfg = tiny_config(tmp_path, epochs=1)
    holder = (
        "import fcntl, os, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); sys.stdin.read()"
    )
    cfg.run_dir.mkdir(parents=True)
    other = subprocess.Popen(
        [sys.executable, "-c", holder, str(cfg.run_dir / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "locked"
        with pytest.raises(
            BlockingIOError, match=rf"{cfg.run_dir} is being written by another `lfi train`.*pid {other.pid}"
        ):
            train(cfg, tiny_data(), InteractionStore(straight[1]))
        assert not (cfg.run_dir / "metrics.csv").exists() and not (cfg.run_dir / "config.yaml").exists()
    finally:
        other.communicate("", timeout=60)
    assert train(cfg, tiny_data(), InteractionStore(straight[1])).metrics["global_step"] == STEPS_PER_EPOCH


class PoisonAt(L.Callback):
    """Turn a weight into NaN before step `step` + 1 runs: its loss and every later one are NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            next(module.model.parameters()).data.fill_(float("nan"))


def test_non_finite_loss_stops_the_run_with_an_error(straight, tmp_path):
    """A NaN loss in epoch 1: the run fails with NonFiniteLoss (not 'finished'), writes no metrics.json and
    no model.safetensors, and its last checkpoint is the last step with finite losses."""
    cfg = tiny_config(tmp_path, epochs=EPOCHS, trainer={"checkpoint_every_n_steps": 1})
    with pytest.raises(NonFiniteLoss, match=r"non-finite training loss \(task, .*loss\) in epoch 1"):
        train(cfg, tiny_data(), InteractionStore(straight[1]), callbacks=[PoisonAt(4)])
    assert not (cfg.run_dir / "metrics.json").exists() and not (cfg.run_dir / "model.safetensors").exists()
    last = torch.load(cfg.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert [r["epoch"] for r in csv_rows(cfg.run_dir)] == ["0"]  # no row of NaN means


# ------------------------------------------------------------------------------------- atomic result files


def test_a_failed_write_leaves_every_result_file_whole(tmp_path, monkeypatch):
    """Each result writer goes through a temporary file and a rename: when the rename fails (as a kill
    before it would), the previous file is untouched and no temporary file is left."""
    cfg = tiny_config(tmp_path)
    csv_writer = EpochCSV(tmp_path / "metrics.csv")
    writers = {
        "metrics.json": lambda p: write_metrics({"test": {"id": {"acc1": 1.0}}}, p),
        "config.yaml": lambda p: save_config(cfg, p),
        "sweep.json": lambda p: write_summary(p, {"counts": {"ok": 1}}),
        "metrics.csv": lambda p: csv_writer._write([{"epoch": 0, "step": 3}]),
    }
    for name in writers:
        (tmp_path / name).write_text("old")

    def interrupted(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", interrupted)
    for name, write in writers.items():
        with pytest.raises(OSError, match="killed"):
            write(tmp_path / name)
        assert (tmp_path / name).read_text() == "old", name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(writers)  # no temporary file left


def test_weights_are_written_whole(straight, tmp_path, monkeypatch):
    """A crash while model.safetensors is written leaves no (partial) model.safetensors and no metrics.json."""
    import lfi.train.engine as engine

    def crash(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(engine, "save_file", crash)
    cfg = tiny_config(tmp_path, epochs=1)
    with pytest.raises(OSError, match="disk full"):
        train(cfg, tiny_data(), InteractionStore(straight[1]))
    assert not (cfg.run_dir / "model.safetensors").exists() and not (cfg.run_dir / "metrics.json").exists()
    assert not [p.name for p in cfg.run_dir.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------------------------------ signals

# `lfi train CONFIG` (the command line itself) on the tiny problem; before step PAUSE_AT + 1 it writes READY
# and waits for GO, which the test writes after sending its signal: the signal always lands in that step
SIGNALLED = """
import sys, time
from pathlib import Path
import lightning as L
sys.path.insert(0, {root!r})
import lfi.train.engine as engine
from lfi.cli import main
from lfi.store.shards import InteractionStore
from tests.train.conftest import tiny_data

config, store, ready, pause_at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
go = ready.with_name("go")

class Pause(L.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == pause_at:
            ready.touch()
            deadline = time.monotonic() + 300  # only bounds a failing test
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

real_train = engine.train
def train(cfg, **kwargs):  # the tiny data and store in place of the config's dataset
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), Pause()]
    return real_train(cfg, tiny_data(), InteractionStore(Path(store)), **kwargs)
engine.train = train
sys.exit(main(["train", config]))
"""


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_saves_a_checkpoint_exits_non_zero_and_prints_the_resume_command(straight, tmp_path, signum):
    """`kill` (SIGTERM) or Ctrl-C (SIGINT) of `lfi train` in the middle of epoch 1: the step finishes, a
    checkpoint is saved, the exit code is 143 / 130, and the one line printed holds the exact command that
    continues the run; continued, the run ends like the uninterrupted one (weights, metrics, metrics.csv)."""
    straight_dir, store_root = straight
    config = tmp_path / "run.yaml"
    save_config(tiny_config(tmp_path, epochs=EPOCHS, trainer={"checkpoint_every_n_steps": 1}), config)
    ready = tmp_path / "ready"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    cmd = [
        sys.executable,
        "-c",
        SIGNALLED.format(root=str(ROOT)),
        str(config),
        str(store_root),
        str(ready),
        "4",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready, proc)
    proc.send_signal(signum)
    (tmp_path / "go").touch()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"lfi train: stopped by {signum.name} after step 5; checkpoint "), line
    assert shlex.split(line.split("continue with: ")[1]) == ["lfi", "train", str(config), "--resume"]
    run_dir = load_config(config).run_dir
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    train(load_config(config), tiny_data(), InteractionStore(store_root), resume=True)
    same_run(run_dir, straight_dir)


def test_the_hint_names_the_resume_command_or_says_there_is_nothing_to_resume(tmp_path):
    """The exit codes are the shell's (128 + signal); before the first checkpoint the hint is the command
    itself, without --resume (which would fail: no checkpoint)."""
    from argparse import Namespace

    from lfi.cli.train import resume_hint
    from lfi.train.signals import Interrupted

    args = Namespace(config="my run.yaml", overrides=["trainer.max_epochs=3"])
    saved, early = Interrupted(signal.SIGINT, tmp_path / "last.ckpt", 7), Interrupted(signal.SIGTERM, None)
    assert (saved.exit_code, early.exit_code) == (130, 143)
    assert resume_hint(args, saved).endswith(
        "continue with: lfi train 'my run.yaml' trainer.max_epochs=3 --resume"
    )
    assert resume_hint(args, early) == (
        "no checkpoint was written yet; start again with: lfi train 'my run.yaml' trainer.max_epochs=3"
    )


# ------------------------------------------------------------------------------------------ sweeps

# a sweep (`subprocess_runner`) whose run is `lfi train` with a trainer that never ends
ORPHAN_SWEEP = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from lfi.train.sweep import subprocess_runner
import os
subprocess_runner(None, sys.argv[1:], dict(os.environ), Path({log!r}))
"""
NEVER_ENDING_TRAIN = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import lfi.train.engine as engine
from lfi.cli import main

def train(cfg, **kwargs):
    Path({marker!r}).write_text(str(os.getpid()))
    while True:
        time.sleep(1)

engine.train = train
sys.exit(main(["train", {config!r}]))
"""


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_sweep_runs_die_with_a_killed_sweep(tmp_path):
    """kill -9 of the sweep process: the `lfi train` it started gets SIGTERM from the kernel and ends."""
    config, marker = tmp_path / "run.yaml", tmp_path / "trainer.pid"
    save_config(tiny_config(tmp_path), config)
    trainer = NEVER_ENDING_TRAIN.format(root=str(ROOT), marker=str(marker), config=str(config))
    sweep_script = ORPHAN_SWEEP.format(root=str(ROOT), log=str(tmp_path / "train.log"))
    sweep = subprocess.Popen(
        [sys.executable, "-c", sweep_script, sys.executable, "-c", trainer], stderr=subprocess.PIPE, text=True
    )
    wait_for(marker, sweep)
    pid = int(marker.read_text())
    try:
        sweep.kill()
        sweep.wait(timeout=60)
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the sweep's trainer outlived the sweep"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
