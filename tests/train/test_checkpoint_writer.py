"""lfi.train.checkpoint_writer: checkpoint files written by a writer process from shared memory."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from lfi.train.checkpoint_writer import CheckpointWriteError, CheckpointWriter, shared_writer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the writer passes file descriptors (POSIX)")


def every_kind_of_tensor() -> dict:
    """A checkpoint-like dict: dtypes, a 0-dim, an empty and a transposed tensor, tensors in lists and tuples,
    plain values beside them."""
    return {
        "state_dict": {
            "w": torch.arange(10.0),
            "bf16": torch.full((2, 3), 1.5, dtype=torch.bfloat16),
            "mask": torch.tensor([True, False, True]),
            "step": torch.tensor(7),
            "empty": torch.empty(0, 4),
            "transposed": torch.arange(12).view(3, 4).t(),
        },
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(5, dtype=torch.float64)}}, "lr": 0.1}],
        "loops": {"pair": (torch.zeros(2, dtype=torch.int32), "text"), "epoch": 3},
    }


def assert_same(loaded, expected) -> None:
    if isinstance(expected, torch.Tensor):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
        assert torch.equal(loaded, expected)
        # its own storage: the file holds the tensor's bytes, not a shared buffer's
        assert loaded.untyped_storage().nbytes() == expected.numel() * expected.element_size()
    elif isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key in expected:
            assert_same(loaded[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for a, b in zip(loaded, expected, strict=True):
            assert_same(a, b)
    else:
        assert loaded == expected


def test_files_hold_the_state_at_the_call_and_removals_wait_for_writes(tmp_path):
    writer = CheckpointWriter()
    state = every_kind_of_tensor()
    expected = every_kind_of_tensor()
    writer.save(state, tmp_path / "run" / "a.ckpt")  # the folder is made
    state["state_dict"]["w"] += (
        1  # training goes on while the file is written: it holds the state at the call
    )
    writer.save(state, tmp_path / "run" / "b.ckpt")
    writer.remove(tmp_path / "run" / "b.ckpt")  # queued behind b's write: b is not left behind
    writer.close()
    assert_same(torch.load(tmp_path / "run" / "a.ckpt", weights_only=True), expected)
    assert sorted(os.listdir(tmp_path / "run")) == ["a.ckpt"]  # no temporary file either


def test_buffers_are_reused_once_their_write_is_done_and_signals_do_not_stop_the_writer(tmp_path):
    writer = CheckpointWriter()
    small, large = {"w": torch.zeros(1000)}, {"w": torch.zeros(5000)}
    writer.save(small, tmp_path / "a.ckpt")
    writer.save(small, tmp_path / "b.ckpt")  # a's buffer is still in flight
    assert writer.buffers == 2
    writer.wait()
    writer.save(small, tmp_path / "c.ckpt")
    assert writer.buffers == 2  # an idle one taken again
    writer.wait()
    writer.save(large, tmp_path / "d.ckpt")  # none fits: a new one, the idle ones too small freed
    assert writer.buffers == 1
    # a terminal's Ctrl-C, or a kill of the job's processes: the trainer decides when to stop
    for signum in (signal.SIGINT, signal.SIGTERM):
        os.kill(writer._process.pid, signum)
    writer.save(small, tmp_path / "e.ckpt")  # the large buffer serves a small state
    writer.close()
    assert writer.buffers == 0
    for name in "abcde":
        assert torch.load(tmp_path / f"{name}.ckpt", weights_only=True)["w"].numel() in (1000, 5000)


def test_a_failed_write_is_raised_once_naming_its_file_and_the_writer_goes_on(tmp_path):
    (tmp_path / "file").write_text("")
    writer = CheckpointWriter()
    writer.save({"w": torch.zeros(3)}, tmp_path / "file" / "last.ckpt")  # under a file: cannot be written
    with pytest.raises(CheckpointWriteError, match=r"writing .*file/last\.ckpt failed(.|\n)*FileExistsError"):
        writer.wait()
    writer.save({"w": torch.ones(3)}, tmp_path / "last.ckpt")
    writer.close()  # the error was raised once
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["w"].sum() == 3


def test_a_dead_writer_process_is_reported_with_the_unfinished_writes(tmp_path):
    writer = CheckpointWriter()
    writer.save({"w": torch.zeros(3)}, tmp_path / "a.ckpt")
    writer.wait()
    os.kill(writer._process.pid, signal.SIGKILL)
    writer._process.wait()
    with pytest.raises(CheckpointWriteError, match=r"exit code -9\) before: writing .*b\.ckpt"):
        writer.save({"w": torch.zeros(3)}, tmp_path / "b.ckpt")
        writer.wait()
    writer.close()  # nothing left to wait for


DYING_TRAINER = """
import os, sys, torch
from lfi.train.checkpoint_writer import CheckpointWriter
writer = CheckpointWriter()
writer.save({{"w": torch.arange(2_000_000.0)}}, {path!r})
os._exit(0)  # the trainer dies at once: no close(), no exit handlers
"""


def test_the_writer_finishes_what_it_was_handed_when_the_trainer_dies(tmp_path):
    path = tmp_path / "last.ckpt"
    code = textwrap.dedent(DYING_TRAINER.format(path=str(path)))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    deadline = time.monotonic() + 120
    while (
        not path.exists() and time.monotonic() < deadline
    ):  # written by the orphaned writer, whole or not at all
        time.sleep(0.05)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(2_000_000.0))


class LoadsBadly:
    """Pickles, but fails to load (as a class defined in a trainer's __main__ would in the writer)."""

    def __reduce__(self):
        return (int, ("not a number",))


def test_a_job_that_cannot_be_sent_or_loaded_fails_alone(tmp_path):
    writer = CheckpointWriter()
    with pytest.raises(Exception, match="lambda"):  # cannot be pickled: raised at once, nothing left pending
        writer.save({"w": torch.zeros(3), "hook": lambda: None}, tmp_path / "a.ckpt")
    writer.wait()
    writer.save({"w": torch.zeros(3), "odd": LoadsBadly()}, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointWriteError, match=r"writing .*b\.ckpt failed(.|\n)*ValueError"):
        writer.wait()
    # a tensor inside an object the containers do not reach travels by value: still the state at the call
    held = argparse.Namespace(t=torch.zeros(2, dtype=torch.bfloat16))
    writer.save({"w": torch.ones(3), "args": held}, tmp_path / "c.ckpt")
    held.t += 1
    writer.close()
    assert not (tmp_path / "a.ckpt").exists() and not (tmp_path / "b.ckpt").exists()
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=False)
    assert torch.equal(loaded["args"].t, torch.zeros(2, dtype=torch.bfloat16)) and loaded["w"].sum() == 3


EXITING_TRAINER = """
import sys, torch
from lfi.train.checkpoint_writer import shared_writer
shared_writer().save({{"w": torch.arange(2_000_000.0)}}, {path!r})
sys.exit(0)  # a normal exit: it waits for the writes
"""


def test_a_process_exit_waits_for_its_writes(tmp_path):
    path = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", EXITING_TRAINER.format(path=str(path))], check=True, timeout=120)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(2_000_000.0))  # no waiting here


def save_in_a_child(path: str) -> None:
    shared_writer().save({"w": torch.ones(4)}, path)


def started_in_a_fork(queue) -> None:
    queue.put(shared_writer()._conn is None)


def test_child_processes_have_writers_of_their_own(tmp_path):
    """A spawned child (Lightning's ddp_spawn rank) ends only once its writes are done, so its parent can read
    them at once; a forked child (a DataLoader worker) does not use its parent's writer."""
    spawn = multiprocessing.get_context("spawn")
    child = spawn.Process(target=save_in_a_child, args=(str(tmp_path / "rank0.ckpt"),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0 and torch.load(tmp_path / "rank0.ckpt", weights_only=True)["w"].sum() == 4
    ours = shared_writer()
    ours.save({"w": torch.zeros(1)}, tmp_path / "parent.ckpt")  # started here
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    forked = fork.Process(target=started_in_a_fork, args=(queue,))
    forked.start()
    assert queue.get(timeout=60) is True  # a fresh writer, not started
    forked.join(timeout=60)
    ours.wait()  # the parent's writer unharmed
    assert (tmp_path / "parent.ckpt").exists()


def test_a_failed_write_does_not_hide_the_error_that_stopped_the_fit(tmp_path):
    from lfi.train.engine import ProcessCheckpointIO

    io = ProcessCheckpointIO()
    (tmp_path / "x").write_text("")
    io.save_checkpoint({"w": torch.zeros(1)}, tmp_path / "x" / "last.ckpt")
    with pytest.raises(KeyError, match="the fit's own"), pytest.warns(RuntimeWarning, match="last.ckpt"):
        try:
            raise KeyError("the fit's own")
        except KeyError:
            io.teardown()  # as Lightning's handler of the fit's exception calls it
            raise


def test_the_writer_runs_the_source_the_trainer_imported_and_imports_no_lfi(tmp_path, monkeypatch):
    """A `git pull` during a run changes the files, not the writer's program; nor does the writer import lfi
    (or Lightning) from disk."""
    from lfi.train import checkpoint_writer

    report = tmp_path / "modules.txt"
    after_serve = (
        f"\nimport pathlib\npathlib.Path({str(report)!r}).write_text(' '.join(sorted(sys.modules)))\n"
    )
    monkeypatch.setattr(checkpoint_writer, "_SOURCE", checkpoint_writer._SOURCE + after_serve)
    writer = CheckpointWriter()
    writer.save({"w": torch.zeros(2)}, tmp_path / "a.ckpt")
    writer.close()  # serve returns: the appended lines run
    modules = report.read_text().split()
    assert "torch" in modules
    assert not [m for m in modules if m.split(".")[0] in ("lfi", "lightning", "lightning_utilities")]


def test_objects_load_in_the_writer_as_in_the_trainer(tmp_path, monkeypatch):
    """A class from a module on the trainer's path (beside its script) is saved; one of the trainer's __main__,
    which the writer cannot load, is refused at the call, naming it."""
    (tmp_path / "beside_the_script.py").write_text(
        "class Marker:\n    def __eq__(self, other):\n        return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from beside_the_script import Marker

    writer = CheckpointWriter()
    writer.save({"w": torch.zeros(1), "marker": Marker()}, tmp_path / "a.ckpt")

    class Local:
        pass

    Local.__module__ = "__main__"
    with pytest.raises(pickle.PicklingError, match="Local.*__main__"):
        writer.save({"w": torch.zeros(1), "local": Local()}, tmp_path / "b.ckpt")
    writer.close()
    assert torch.load(tmp_path / "a.ckpt", weights_only=False)["marker"] == Marker()
    assert not (tmp_path / "b.ckpt").exists()


def test_at_most_two_writes_are_in_flight(tmp_path):
    """A disk slower than the saves holds a third save back: memory stays at two buffers."""
    writer = CheckpointWriter()
    for i in range(6):
        writer.save({"w": torch.zeros(100_000)}, tmp_path / f"{i}.ckpt")
        assert writer.buffers <= 2
    writer.close()
    assert len(list(tmp_path.glob("*.ckpt"))) == 6


def test_an_interrupted_send_closes_the_stream_and_loses_no_whole_job(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a frame: the writer ends after the jobs it received whole; nothing is left to
    wait for (Lightning's teardown after a KeyboardInterrupt would wait for ever otherwise)."""
    writer = CheckpointWriter()
    writer.save({"w": torch.ones(3)}, tmp_path / "a.ckpt")
    process = writer._process

    def interrupted(data):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer._conn, "send_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.save({"w": torch.zeros(3)}, tmp_path / "b.ckpt")
    writer.wait()  # returns at once
    assert process.poll() is not None and writer.buffers == 0
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["w"].sum() == 3
    assert not (tmp_path / "b.ckpt").exists()


def test_a_removal_before_any_write_needs_no_process(tmp_path):
    (tmp_path / "old.ckpt").write_text("")
    writer = CheckpointWriter()
    writer.remove(tmp_path / "old.ckpt")
    writer.remove(tmp_path / "missing.ckpt")
    assert not (tmp_path / "old.ckpt").exists() and writer._process is None


def test_the_engine_writes_its_checkpoints_through_the_writer(tmp_path):
    from lfi.train.engine import ProcessCheckpointIO

    io = ProcessCheckpointIO()
    weight = torch.zeros(4)
    io.save_checkpoint({"w": weight}, tmp_path / "last.ckpt")
    weight += 1
    io.remove_checkpoint(tmp_path / "best.ckpt")
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({"w": weight}, tmp_path / "x.ckpt", storage_options={})
    (tmp_path / "x").write_text("")
    io.save_checkpoint({"w": weight}, tmp_path / "x" / "y.ckpt")
    with pytest.raises(CheckpointWriteError, match="y.ckpt"):  # the end of fit raises a failed write
        io.teardown()
    assert io.load_checkpoint(tmp_path / "last.ckpt")["w"].sum() == 0  # the state at the call
    # pickled for another process (Lightning's ddp_spawn), it takes that process's writer, not this one's
    assert pickle.loads(pickle.dumps(io)).writer is io.writer


@pytest.mark.gpu
def test_device_tensors_are_copied_at_the_call(tmp_path):
    """A GPU state: the file holds its values at the call, on the CPU, while the device goes on."""
    writer = CheckpointWriter()
    weight = torch.arange(1000.0, device="cuda")
    state = {
        "state_dict": {"w": weight, "half": weight.to(torch.bfloat16)},
        "step": torch.tensor(3, device="cuda"),
    }
    writer.save(state, tmp_path / "last.ckpt")
    weight.add_(1)  # queued behind the copy on the same stream
    writer.close()
    loaded = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert loaded["state_dict"]["w"].device.type == "cpu"
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(1000.0))
    assert torch.equal(loaded["state_dict"]["half"], torch.arange(1000.0).to(torch.bfloat16))
    assert loaded["step"].item() == 3
