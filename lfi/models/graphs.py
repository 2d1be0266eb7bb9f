"""A frozen trunk's forward replayed from CUDA graphs: one launch per batch instead of one per operator.

A linear probe trains only its head: the trunk (DeiT-Tiny: ~320 kernels per batch of 256) computes a fixed
function of the image, and on an H100 its ~8 ms of GPU work are launched by more host time than that once
Lightning's own per-step work is added (`benchmarks/train_throughput.py --profile-fit-steps`): the host, not the
GPU, sets the step's pace. A function whose parameters are all frozen and which draws no random numbers can be
captured once per input signature and replayed: the same kernels on the same memory, so the same values.

    graphs = GraphedForward(limit=4)
    features = graphs(trunk_fn, x, parameters)   # eager where a graph cannot serve the call (see `eager_reason`)

A signature is captured at its third call (`CAPTURE_AT`): training batches and the validation's full batches
are, a validation's last partial batch is not, and every capture costs a warm-up pass, the capture and the
graph's instantiation (tens of ms).

The parameters are read, not copied, at each replay: in-place updates (load_state_dict, an optimizer) are
seen; parameters moved elsewhere (`.to()`, a new storage) are noticed by their addresses and the graphs are
captured again.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

#: the call of a signature that captures it; the ones before run eagerly
CAPTURE_AT = 3
_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for every capture (capture needs a stream other than the default one; each
    new stream costs cuBLAS and cuDNN their set-up again)."""
    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device)
    return _STREAMS[device]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: torch.Tensor


def _signature(x: torch.Tensor) -> tuple:
    """What a captured graph is specific to: the input's layout and the autocast state it was captured in."""
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    return (
        tuple(x.shape),
        x.stride(),
        x.dtype,
        x.device,
        autocast,
        torch.get_autocast_dtype(device) if autocast else None,
    )


class GraphedForward:
    """Replays fn(x) -> tensor from CUDA graphs, one per input signature (shape, strides, dtype, device,
    autocast state), at most `limit` of them (other signatures run eagerly). Not an nn.Module: it owns no
    parameters (the model does) and is not copied with the model (a deep copy starts with no graphs)."""

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self.graphs: dict[tuple, _Captured] = {}
        self.calls: collections.Counter[tuple] = collections.Counter()
        self.addresses: tuple[int, ...] = ()
        self.pool = None

    def __deepcopy__(self, memo: dict) -> GraphedForward:
        return GraphedForward(self.limit)

    def __getstate__(self) -> dict:
        return {"limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])

    def clear(self) -> None:
        """Drop every graph (and their memory pool: a pool whose graphs are gone cannot take a capture)."""
        self.graphs.clear()
        self.calls.clear()
        self.pool = None

    @staticmethod
    def eager_reason(x: torch.Tensor, parameters: Sequence[torch.Tensor]) -> str | None:
        """Why fn(x) must run eagerly (None when a graph may serve it)."""
        if not x.is_cuda:
            return f"input on {x.device}: CUDA graphs need CUDA"
        if torch.cuda.is_current_stream_capturing() or torch.compiler.is_compiling():
            return "inside a capture or torch.compile: left to it"
        if x.requires_grad or any(p.requires_grad for p in parameters):
            return "a gradient is needed: a graph replays the forward only"
        return None

    def __call__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, parameters: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """fn(x), from a graph where `eager_reason` allows one. parameters: every tensor fn reads besides x."""
        if self.eager_reason(x, parameters) is not None:
            return fn(x)
        addresses = tuple(p.data_ptr() for p in parameters)
        if addresses != self.addresses:  # moved since the captures: they would read the old memory
            self.clear()
            self.addresses = addresses
        key = _signature(x)
        captured = self.graphs.get(key)
        if captured is None:
            self.calls[key] += 1
            if self.calls[key] < CAPTURE_AT or len(self.graphs) >= self.limit:
                return fn(x)
            captured = self.graphs[key] = self._capture(fn, x)
        captured.static_in.copy_(x)
        captured.graph.replay()
        # a copy: the static output is overwritten by the next replay, and a caller may keep its result
        return captured.static_out.clone()

    def _capture(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> _Captured:
        # normal tensors even when the call comes from inference mode (Lightning's validation): an inference
        # tensor could not be written to by a later call from training
        with torch.inference_mode(False), torch.no_grad():
            static_in = x.clone()
            current, side = torch.cuda.current_stream(x.device), _capture_stream(x.device)
            side.wait_stream(current)
            if self.pool is None:
                # one pool for every signature: replays never overlap and each output is copied out at once
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(side):
                # an eager pass on the capture's stream first: lazy initialisation (its cuBLAS workspace, cuDNN's
                # plans) must not happen under capture. Not `torch.cuda.graph`, which empties the allocator's
                # cache at every capture: the steps after it would allocate their memory from the driver again
                fn(static_in)
                try:
                    graph.capture_begin(pool=self.pool)
                    try:
                        static_out = fn(static_in)
                    finally:
                        graph.capture_end()
                except RuntimeError as error:
                    raise RuntimeError(
                        f"capturing the frozen trunk's forward in a CUDA graph failed ({error}); run it eagerly "
                        "with model.cuda_graphs=false (IViTConfig(cuda_graphs=False))"
                    ) from error
            current.wait_stream(side)
        if not isinstance(static_out, torch.Tensor):
            raise TypeError(f"GraphedForward: fn must return one tensor, got {type(static_out).__name__}")
        return _Captured(graph, static_in, static_out)


def is_deterministic(module: torch.nn.Module) -> bool:
    """True if `module` draws no random numbers in training mode: every dropout-like submodule (torch's
    dropouts, timm's DropPath and PatchDropout) has probability 0."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
        if getattr(m, "drop_prob", 0) or getattr(m, "prob", 0):  # timm's DropPath, PatchDropout
            return False
    return True
