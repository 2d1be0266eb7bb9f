"""Checkpoint files written by a child process, so that writing them takes nothing from the training thread.

A thread is not enough: torch's zip writer (`PyTorchFileWriter.write_record`) holds Python's GIL while it
copies and checksums every tensor, so a background thread's write still stalls a host-bound training loop
(`benchmarks/checkpoint_stall.py`). Here the training thread only copies the state's tensors into shared memory
(the point-in-time snapshot every background write needs anyway) and hands the rest of the checkpoint, a small
skeleton, to a writer process that serialises and writes the file:

    writer = CheckpointWriter()
    writer.save(checkpoint, path)   # returns once the tensors are copied; the file is written later
    writer.remove(old_path)         # queued behind every earlier write
    writer.release()                # every handed job done (its first error raised), buffers freed
    writer.close()                  # the same, and the process stopped

Jobs run in the order they were handed over; a file appears whole or not at all (a synced temporary file and
a rename). The skeleton is the checkpoint pickled with each tensor (wherever it lies) replaced by its place in a
shared buffer, as torch.save replaces storages: anonymous memory (memfd on Linux), passed to the process as a
file descriptor and reused once its write is done; at most two writes are in flight (a third save waits), so
memory stays at two buffers where the disk is slower than the saves. Each tensor is saved with a storage of its
own (tensors that shared one are saved apart). The writer loads the skeleton's other objects from the trainer's
module path; objects of the trainer's __main__, which it cannot load, are refused at the call. It runs in its
own session and ignores SIGINT and SIGTERM (the trainer decides when to stop); it ends when told to, or after
every job it received whole when the trainer's end of the pipe closes: the trainer died, or was interrupted in
the middle of a message. lfi's engine keeps one writer per process (`shared_writer`), which that process's exit
waits for. One thread at a time; POSIX only (file descriptors passed over a Unix socket).

The writer process runs this module's source as the trainer imported it (a `git pull` during a run does not
give the two ends different protocols), so it imports nothing but the standard library and torch.
"""

from __future__ import annotations

import contextlib
import io
import math
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from multiprocessing import util
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import torch

_ALIGN = 64  # every tensor's bytes start on a cache line (and any dtype's alignment)
_IN_FLIGHT = 2  # writes queued at once (a last and a best checkpoint); a third save waits (a disk slower than the saves)


def _own_source() -> str | None:
    """This module's source as the trainer imported it (not as it may be on disk later): the writer's program."""
    try:
        return __loader__.get_source(__name__)
    except (ImportError, OSError):
        return None


_SOURCE = _own_source() if __name__ != "__main__" else None


class CheckpointWriteError(RuntimeError):
    """A checkpoint job failed in the writer process, or the process died with jobs unfinished."""


class _Slot(NamedTuple):
    """Where one tensor of the skeleton lies in its shared buffer."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class _Buffer:
    """Anonymous shared memory; `view(slot)` is a tensor over its bytes, with a storage of its own."""

    def __init__(self, ident: int, size: int) -> None:
        self.ident, self.size = ident, size
        self.fd = _anonymous_file(size)
        self.map = mmap.mmap(self.fd, size)

    def view(self, slot: _Slot) -> torch.Tensor:
        return _tensor_at(self.map, slot)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def _anonymous_file(size: int) -> int:
    """A file descriptor of `size` bytes of memory that no path names (freed when the last holder closes it)."""
    if hasattr(os, "memfd_create"):  # Linux: memory, never the disk, and no /dev/shm size limit
        fd = os.memfd_create("lfi-checkpoint", os.MFD_CLOEXEC)
    else:  # macOS: an unlinked temporary file
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, size)
    return fd


def _tensor_at(buffer: mmap.mmap, slot: _Slot) -> torch.Tensor:
    """The tensor of `slot` over `buffer`'s bytes: a storage of exactly its own bytes (torch.save writes those)."""
    numel = math.prod(slot.shape)
    if numel == 0:
        return torch.empty(slot.shape, dtype=slot.dtype)
    return torch.frombuffer(buffer, dtype=slot.dtype, count=numel, offset=slot.offset).view(slot.shape)


def _nbytes(slot: _Slot) -> int:
    return math.prod(slot.shape) * slot.dtype.itemsize


class _Skeleton(pickle.Pickler):
    """Pickles a checkpoint with each tensor replaced by a `_Slot` (persistent ids: no tensor's bytes in the
    pickle); `tensors` lists each tensor with its slot, `end` the bytes they take."""

    def __init__(self, out: io.BytesIO) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: list[tuple[torch.Tensor, _Slot]] = []
        self.slots: dict[int, _Slot] = {}  # id(tensor) -> its slot: a tensor met twice is copied once
        self.end = 0

    def reducer_override(self, obj: Any) -> Any:
        # pickled by name, a class or function of the trainer's __main__ would not load in the writer process
        if getattr(obj, "__module__", None) == "__main__":  # a class, a function, or an instance of either
            raise pickle.PicklingError(
                f"{obj!r} is defined in the trainer's __main__: the checkpoint writer process cannot load it; "
                "define it in a module"
            )
        return NotImplemented

    def persistent_id(self, obj: Any) -> tuple | None:
        if not isinstance(obj, torch.Tensor):
            return None
        if id(obj) not in self.slots:
            slot = _Slot(self.end, obj.dtype, tuple(obj.shape))
            self.slots[id(obj)] = slot
            self.tensors.append((obj, slot))
            self.end += -(-_nbytes(slot) // _ALIGN) * _ALIGN
        return tuple(self.slots[id(obj)])  # a plain tuple: the writer knows no class of this module's


def _dumps(job: int, message: tuple) -> bytes:
    """The job's number in 8 bytes (the writer can answer a job whose message does not load), then the message."""
    return job.to_bytes(8, "little") + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


class CheckpointWriter:
    """The trainer's end: hands checkpoints to a writer process (started on first use) and collects its answers.

    An error of a job is raised once, by the next call that learns of it or by `wait`, `release` or `close`."""

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._process: subprocess.Popen | None = None
        self._idle: list[_Buffer] = []
        self._pending: dict[int, tuple[str, _Buffer | None]] = {}  # job -> (what, its buffer)
        self._jobs = 0
        self._buffers = 0
        self._error: CheckpointWriteError | None = None
        self._exit_code: int | None = None

    @property
    def buffers(self) -> int:
        """Shared buffers held now (in flight and idle)."""
        return len(self._idle) + self._in_flight()

    def _handed(self) -> list[_Buffer]:
        return [b for _, b in self._pending.values() if b is not None]

    def _in_flight(self) -> int:
        return len(self._handed())

    def save(self, checkpoint: Any, path: str | Path) -> None:
        """Copy `checkpoint`'s tensors (any device) to shared memory and queue the file's write."""
        self._collect(wait=self._in_flight() >= _IN_FLIGHT)
        out = io.BytesIO()
        pickler = _Skeleton(out)
        pickler.dump(checkpoint)  # an object that cannot be pickled fails here, before anything is queued
        buffer = self._buffer(max(pickler.end, _ALIGN))
        try:
            for tensor, slot in pickler.tensors:
                if tensor.numel():
                    buffer.view(slot).copy_(tensor.detach())
            self._send(("save", buffer.ident, out.getvalue(), str(path)), f"writing {path}", buffer)
        except BaseException:
            if self._conn is not None and buffer not in self._handed():  # not handed over: idle again
                self._idle.append(buffer)
            elif not buffer.map.closed:  # the process is gone
                buffer.close()
            raise

    def remove(self, path: str | Path) -> None:
        """Queue the removal of `path` (a missing file is no error), behind every earlier write."""
        if self._conn is None:  # nothing written yet: nothing to wait for
            Path(path).unlink(missing_ok=True)
            return
        self._collect()
        self._send(("remove", str(path)), f"removing {path}")

    def wait(self) -> None:
        """Return once every job handed over is done; raise the first error not yet raised."""
        if self._conn is not None:
            self._collect(wait=True)

    def release(self) -> None:
        """`wait`, then free the buffers, keeping the process for later jobs (the end of a fit)."""
        try:
            self.wait()
        finally:
            if self._conn is not None:
                self._free(list(self._idle))

    def close(self) -> None:
        """`wait`, then stop the process and free the buffers."""
        if self._conn is None:
            return
        try:
            self._collect(wait=True)
        finally:
            self._stop()

    def _buffer(self, size: int) -> _Buffer:
        """The smallest idle buffer of at least `size` bytes, or a new one handed to the process (then the idle
        buffers too small to be of use are freed)."""
        fitting = [b for b in self._idle if b.size >= size]
        if fitting:
            buffer = min(fitting, key=lambda b: b.size)
            self._idle.remove(buffer)
            return buffer
        self.start()
        self._free([b for b in self._idle if b.size < size])
        self._buffers += 1
        buffer = _Buffer(self._buffers, size)
        try:
            self._send(("buffer", buffer.ident, size), "mapping a buffer")
            # no acknowledgement on this stream (multiprocessing's send_handle waits for one on macOS)
            self._sending(lambda: socket.send_fds(self._socket, [b"F"], [buffer.fd]))
        except BaseException:
            buffer.close()
            raise
        return buffer

    def _free(self, idle: list[_Buffer]) -> None:
        for buffer in idle:
            self._idle.remove(buffer)
            buffer.close()
            self._send(("free", buffer.ident), "freeing a buffer")

    def start(self) -> None:
        """Start the process now, if it is not running (the first save starts it otherwise). A fresh interpreter
        that imports torch takes seconds to start; a short fit that starts it at its first save waits for that
        at its end, so `lfi.train.engine.train` starts it before it builds the model and data."""
        if self._conn is not None:
            return
        # a fresh interpreter (not fork: the trainer has threads, maybe a CUDA context; not multiprocessing's
        # spawn: it runs the trainer's main script again where that lacks an `if __name__ == "__main__"`), its
        # program read from stdin; in its own session, so that a terminal's Ctrl-C reaches the trainer alone
        if _SOURCE is None:
            raise CheckpointWriteError(f"{__name__} has no readable source (an install of .pyc files alone)")
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-", str(theirs.fileno()), "lfi-checkpoint-writer"],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
        try:
            process.stdin.write(_SOURCE.encode())
            process.stdin.close()
        except OSError as error:
            ours.close()
            raise CheckpointWriteError(
                f"the checkpoint writer process did not start (exit code {process.wait()})"
            ) from error
        self._process, self._socket = process, ours
        self._conn = Connection(os.dup(ours.fileno()))
        # the trainer's module path: the writer finds the modules of whatever the checkpoints hold as the trainer does
        self._send(("path", list(sys.path)), "setting the module path")

    def _send(self, message: tuple, what: str, buffer: _Buffer | None = None) -> None:
        """Send one job (pickled before it is counted: a job that cannot be sent is not waited for)."""
        data = _dumps(self._jobs + 1, message)
        self.start()
        self._jobs += 1
        self._pending[self._jobs] = (what, buffer)
        self._sending(lambda: self._conn.send_bytes(data))

    def _sending(self, send: Any) -> None:
        """Run `send`; if the process is gone, say so; if interrupted (Ctrl-C), a frame may be cut short and
        the stream is no longer to be trusted: close it (the writer ends after every whole job) and re-raise."""
        try:
            send()
        except OSError:
            self._lost()
        except BaseException:
            self._stop(tell=False)
            raise

    def _collect(self, wait: bool = False) -> None:
        """Take the process's answers (all of them if `wait`); raise the first error not yet raised."""
        while self._pending and (wait or self._conn.poll()):
            if not self._conn.poll(1.0):
                if self._process.poll() is not None:
                    self._lost()
                continue
            try:
                job, failure = pickle.loads(self._conn.recv_bytes())
            except (EOFError, ConnectionResetError):
                self._lost()
            what, buffer = self._pending.pop(job)
            if buffer is not None:
                self._idle.append(buffer)
            if failure and self._error is None:
                self._error = CheckpointWriteError(
                    f"{what} failed in the checkpoint writer process:\n{failure}"
                )
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _lost(self) -> None:
        unfinished = ", ".join(what for what, _ in self._pending.values())
        self._stop()
        raise CheckpointWriteError(
            f"the checkpoint writer process ended (exit code {self._exit_code}) before: {unfinished}"
        )

    def _stop(self, tell: bool = True) -> None:
        """End the process: told to stop, or by the pipe's end (then after every whole job it holds); wait for it."""
        if self._process is None:
            return
        process = self._process
        if tell and process.poll() is None:
            with contextlib.suppress(OSError):  # it may end in between
                self._conn.send_bytes(_dumps(0, ("stop",)))
        self._abandon()
        self._exit_code = process.wait()

    def _abandon(self) -> None:
        """Close this process's ends of the pipe and the buffers, without a word to the writer."""
        self._conn.close()
        self._socket.close()
        for buffer in [*self._idle, *self._handed()]:
            buffer.close()
        self._idle.clear()
        self._pending.clear()
        self._conn = self._process = None


_shared: CheckpointWriter | None = None
_shared_pid: int | None = None


def shared_writer() -> CheckpointWriter:
    """This process's writer for every fit: started by `start` or at the first save and kept between fits (a fresh
    interpreter that imports torch takes seconds to start); this process's exit waits for its jobs, then stops it.
    A forked child (a DataLoader worker, a forked rank) gets a writer of its own, if it saves at all."""
    global _shared, _shared_pid
    if _shared is None or _shared_pid != os.getpid():
        _shared, _shared_pid = CheckpointWriter(), os.getpid()
        # multiprocessing's exit hook: run at the interpreter's exit and at the end of its child processes
        # (Lightning's ddp_spawn ranks), whose parent reads their files once they have ended
        util.Finalize(None, _shared.close, exitpriority=10)
    return _shared


def _forget_in_child() -> None:
    """After a fork: the child closes its copies of the parent's pipe and buffers (the writer is the parent's)."""
    global _shared
    if _shared is not None and _shared._conn is not None:
        _shared._abandon()
    _shared = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_in_child)


def serve(fd: int) -> None:
    """The writer process, on its end of the pipe: run each job in turn, answer (job, None) or (job, traceback)."""
    conn = Connection(fd)
    sock = socket.socket(fileno=os.dup(fd))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    buffers: dict[int, mmap.mmap] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, ConnectionResetError):  # the trainer's end closed: every job it handed over is done
            return
        job, failure = int.from_bytes(data[:8], "little"), None
        try:
            kind, *args = pickle.loads(data[8:])  # a skeleton that does not load fails its job alone
            if kind == "stop":
                return
            if kind == "buffer":
                ident, size = args
                _, (received,), _, _ = socket.recv_fds(sock, 1, 1)
                buffers[ident] = mmap.mmap(received, size)
                os.close(received)
            elif kind == "free":
                buffers.pop(args[0]).close()
            elif kind == "save":
                ident, skeleton, path = args
                _write(buffers[ident], skeleton, Path(path))
            elif kind == "remove":
                Path(args[0]).unlink(missing_ok=True)
            elif kind == "path":
                sys.path[:] = args[0]
        except Exception:
            failure = traceback.format_exc()
        with contextlib.suppress(OSError):  # a trainer that died hears nothing: its jobs go on all the same
            conn.send_bytes(pickle.dumps((job, failure)))


def _write(buffer: mmap.mmap, skeleton: bytes, path: Path) -> None:
    """torch.save of the skeleton with its tensors read from `buffer`, through a synced temporary file and a
    rename (lfi.files.atomic_path's steps: this program imports nothing of lfi)."""
    unpickler = pickle.Unpickler(io.BytesIO(skeleton))
    unpickler.persistent_load = lambda slot: _tensor_at(buffer, _Slot(*slot))
    checkpoint = unpickler.load()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(checkpoint, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":  # the writer process: python - FD < this module
    serve(int(sys.argv[1]))
