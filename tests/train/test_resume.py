"""Nothing lost: a run killed at any step and resumed ends bit for bit like an uninterrupted one; a finished
run is not trained again; checkpoints load without pickle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from lfi.train.engine import train
from tests.train.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]

# a child process: trains the tiny problem with augmentation and 2 loader workers, a checkpoint every step,
# and kills itself with SIGKILL (no clean-up at all) when it reaches step KILL_AT (if given); Lightning runs
# checkpoint callbacks last, so the run resumes from step KILL_AT - 1
CHILD = """
import os, signal, sys
from pathlib import Path
import lightning as L
sys.path.insert(0, {root!r})
from lfi.store.shards import InteractionStore
from lfi.train.engine import train
from tests.train.conftest import tiny_config, tiny_data

out, kill_at, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

class Kill(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

cfg = tiny_config(out, epochs=3, data={{"augment": True, "num_workers": 2}},
                  trainer={{"checkpoint_every_n_steps": 1}})
train(cfg, tiny_data(), InteractionStore(Path(sys.argv[4])), resume=resume or None, callbacks=[Kill()])
"""


def run_child(out: Path, store: Path, kill_at: int, resume: bool) -> int:
    script = CHILD.format(root=str(ROOT))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-c", script, str(out), str(kill_at), "1" if resume else "0", str(store)]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "iq_ic_gc" / "model.safetensors")


@pytest.mark.slow
def test_kill_9_at_any_step_then_resume_is_bit_exact(tiny):
    """Augmentation on, 2 workers, killed with SIGKILL mid-epoch (step 5 of 9: resumes after step 4) and at
    step 7 (resumes at the start of epoch 2), resumed each time: the final weights and metrics equal the
    uninterrupted run's."""
    _, store, tmp = tiny
    assert run_child(tmp / "straight", store.root, -1, False) == 0
    assert run_child(tmp / "killed", store.root, 5, False) == -signal.SIGKILL
    assert not (tmp / "killed" / "iq_ic_gc" / "metrics.json").exists()
    assert run_child(tmp / "killed", store.root, 7, True) == -signal.SIGKILL
    assert run_child(tmp / "killed", store.root, -1, True) == 0
    a, b = weights(tmp / "straight"), weights(tmp / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    metrics = [
        json.loads((tmp / r / "iq_ic_gc" / "metrics.json").read_text()) for r in ("straight", "killed")
    ]
    assert (
        metrics[0]["test"] == metrics[1]["test"]
        and metrics[0]["global_step"] == metrics[1]["global_step"] == 9
    )


class Kill(L.Callback):
    """Raise in the middle of epoch 1 (after epoch 0's checkpoint was written), like a killed job."""

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.current_epoch == 1 and trainer.fit_loop.epoch_loop.batch_progress.current.ready >= 2:
            raise RuntimeError("simulated kill")


def test_last_checkpoint_is_the_latest_epoch(tiny):
    """last.ckpt follows every epoch, not only the epochs where validation improved."""
    data, store, tmp = tiny
    run = train(tiny_config(tmp / "a", epochs=3), data, store)
    last = torch.load(run.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == run.metrics["global_step"]


@pytest.mark.parametrize("device_pipeline", [False, True], ids=["loader", "device_pipeline"])
def test_resume_after_kill_matches_uninterrupted(tiny, device_pipeline):
    """Killed mid-epoch, resumed: the same weights and metrics, with the loader path and with the batches
    made on the device (`lfi.data.gpu`, forced on here; on a GPU it is the default)."""
    data, store, tmp = tiny
    options = {"augment": True, "gpu_pipeline": device_pipeline, "cache_dir": str(tmp / "cache")}
    straight = train(tiny_config(tmp / "a", epochs=3, data=options), data, store)
    cfg = tiny_config(tmp / "b", epochs=3, data=options)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg, data, store, callbacks=[Kill()])
    assert (cfg.run_dir / "checkpoints" / "last.ckpt").is_file() and not (
        cfg.run_dir / "metrics.json"
    ).exists()
    resumed = train(cfg, data, store, resume=True)
    assert resumed.metrics["test"] == straight.metrics["test"]
    assert resumed.metrics["global_step"] == straight.metrics["global_step"]
    a, b = load_file(straight.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a finished run is not retrained (and its metrics are not overwritten)
    before = (cfg.run_dir / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match="finished"):
        train(cfg, data, store, resume=True)
    assert (cfg.run_dir / "metrics.json").read_text() == before


def test_run_folder_contents(tiny):
    data, store, tmp = tiny
    run = train(tiny_config(tmp / "c", epochs=2), data, store)
    for name in ("config.yaml", "metrics.json", "metrics.csv", "model.safetensors", "checkpoints/last.ckpt"):
        assert (run.run_dir / name).is_file(), name
    assert list((run.run_dir / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"id", "ood", "mean_acc1", "var_acc1"}
    assert metrics["teacher"] == "oracle" and metrics["best_epoch"] in (0, 1)
    lines = (run.run_dir / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3  # a header and one row per epoch
    for column in (
        "epoch",
        "step",
        "val/acc1",
        "val/acc5",
        "train/task",
        "train/align",
        "train/loss",
        "lr/head",
    ):
        assert column in lines[0].split(","), column


def test_resume_needs_a_checkpoint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        train(tiny_config(tmp_path), resume=True)


class Payload:
    """A pickle payload: unpickling it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_code(tiny, monkeypatch):
    """Even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, --resume loads with weights_only=True: a crafted
    checkpoint fails to load and its payload does not run."""
    data, store, tmp = tiny
    cfg = tiny_config(tmp / "p", epochs=1)
    marker = tmp / "payload-ran"
    crafted = tmp / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": Payload(marker)}, crafted)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        train(cfg, data, store, resume=str(crafted))
    assert not marker.exists()
