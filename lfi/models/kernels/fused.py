"""Fused interaction attention: the Triton kernels behind `interaction_attention`'s exact signature.

`fused_interaction_attention` computes what `lfi.models.interaction_attention.interaction_attention` computes
(same arguments, same outputs, gradients for q, k, v, q_int and the gate weights) without any B x H x N x N
tensor in device memory (the head-mixing gate's backward keeps its hidden activations, B x E x N x N, for one
layer at a time). Requested maps are limited to their first rows (MapRequest(rows=k)); those rows are
recomputed in plain torch by `interaction_maps` (cheap, and their gradients flow through autograd).

Which path runs: `should_use_fused(...)` (the dispatch's question) honours the backend chosen by
`use_backend(...)` (context manager, innermost wins) or else the environment variable LFI_ATTENTION:
  "auto" (default): fused wherever `can_use_fused` holds (CUDA with Triton, supported shapes, a gate) and
      torch.compile is not tracing, the reference elsewhere (the CPU; no gate, where two SDPA calls are faster
      than the kernels; under torch.compile, which then compiles the reference math). On an H200 the
      kernels meet the accuracy bounds of tests/kernels (benchmarks/results/kernels_gpu_h200.txt) and an
      I-ViT-S/16 train step takes ~0.6x the reference path's time and ~0.3x its memory (benchmarks/README.md);
  "reference": never fused (the exact PyTorch math, e.g. to check a result);
  "fused": fused for every layer with interaction queries, and an error where it cannot be (benchmarks use
      this to be sure they measure the kernel).

Gates: GateWeights with w1 (E, 2H) is the head-mixing gate of Eq. 5 (`gate_values`). GateWeights with
w1 (E, 2), w2 (2, E), b2 (2,) is the per-head gate (`per_head_gate_values`): the same FFN read of
Eq. 5, but over the two maps of one head at a time, with weights shared by the heads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lfi.models.interaction_attention import GateWeights, MapRequest

try:
    import triton

    from lfi.models.kernels import _mix
    from lfi.models.kernels import _triton as _kernels
except ImportError:  # the CPU keeps the reference path
    triton = None
    _kernels = None
    _mix = None

Backend = Literal["auto", "fused", "reference"]
BACKENDS: tuple[Backend, ...] = ("auto", "fused", "reference")
BACKEND_ENV = "LFI_ATTENTION"
HEAD_DIMS = (32, 64)
# the head-mixing kernels hold every head of a tile, and the gate's hidden layer, in registers
MAX_MIX_HEADS = 16
MAX_MIX_HEADS_FP32 = 8
MAX_GATE_HIDDEN = 32
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_backend_stack: list[Backend] = []


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def attention_backend() -> Backend:
    """The backend in force: the innermost `use_backend`, else $LFI_ATTENTION, else "auto"."""
    backend = _backend_stack[-1] if _backend_stack else os.environ.get(BACKEND_ENV, "auto")
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={backend!r}: expected one of {BACKENDS}")
    return backend


@contextlib.contextmanager
def use_backend(backend: Backend) -> Iterator[None]:
    """Run the enclosed code with interaction attention on `backend` ("auto", "fused" or "reference")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _backend_stack.append(backend)
    try:
        yield
    finally:
        _backend_stack.pop()


def is_per_head_gate(gate: GateWeights) -> bool:
    """True for the per-head gate (w1: (E, 2)); with one head both readings are the same function."""
    return gate.w1.shape[1] == 2


def per_head_gate_values(
    c_agt: torch.Tensor, c_vfm: torch.Tensor, gate: GateWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-head gate: Eq. 5's FFN over [C_AGT[h]; C_VFM[h]] at each (head, query, key), weights shared.

    Like `gate_values`, the maps are multiplied by the key count N first. c_agt, c_vfm: (B, H, M, N) ->
    g1, g2: (B, H, M, N). gate: w1 (E, 2), b1 (E,), w2 (2, E), b2 (2,).
    """
    x = torch.stack([c_agt, c_vfm], dim=-1).mul(c_agt.shape[-1])  # (B, H, M, N, 2)
    g = torch.sigmoid(F.linear(F.gelu(F.linear(x, gate.w1, gate.b1)), gate.w2, gate.b2))
    return g[..., 0], g[..., 1]


def any_gate_values(
    c_agt: torch.Tensor, c_vfm: torch.Tensor, gate: GateWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """`gate_values` (head-mixing) or `per_head_gate_values`, chosen by the weights' shape."""
    from lfi.models.interaction_attention import gate_values  # lazy: that module may import this one

    return (per_head_gate_values if is_per_head_gate(gate) else gate_values)(c_agt, c_vfm, gate)


def _key_mask_bias(attn_mask: torch.Tensor | None, batch: int, keys: int) -> torch.Tensor | None:
    """A mask that varies over keys (and batch) only -> additive fp32 bias (b, N), b in {1, batch}."""
    if attn_mask is None:
        return None
    m = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))[:, 0, 0, :]
    m = m.expand(m.shape[0], keys)
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, device=m.device, dtype=torch.float32).masked_fill(~m, float("-inf"))
    return m.float().contiguous()


def fused_unsupported_reason(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_int: torch.Tensor | None = None,
    gate: GateWeights | None = None,
    request: MapRequest | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    dispatch: bool = True,
) -> str | None:
    """Why the fused path should not take this call (None when it should). Arguments as `interaction_attention`.

    dispatch=False asks only whether the kernels can compute it at all: it skips the device check (the
    interpreter runs them on the CPU) and accepts full-map requests (correct, but no cheaper than the
    reference, which materialises the maps once and reuses them).
    """
    if _kernels is None:
        return "Triton is not installed"
    if q_int is None:
        return "no interaction queries: plain attention already runs through fused SDPA"
    if dispatch and gate is None and dropout_p == 0:
        return "no gate: C_F V = (C_AGT V + C_VFM V) / 2 runs as two fused SDPA calls, which are faster"
    if dispatch and request is not None and request.names and request.rows is None:
        return "full maps requested: the reference path materialises them once anyway"
    if dispatch and not q.is_cuda:
        return f"tensors on {q.device}, the kernels need CUDA"
    if dropout_p > 0:
        return "attention dropout (dropout_p > 0) is not implemented in the kernels"
    if q.dim() != 4 or any(t.shape != q.shape for t in (k, v, q_int)):
        return "q, k, v and q_int must share one shape (B, H, N, d)"
    if q.dtype not in _DTYPES or any(t.dtype != q.dtype for t in (k, v, q_int)):
        return f"q, k, v, q_int must share a dtype among {_DTYPES}"
    heads, head_dim = q.shape[1], q.shape[3]
    if head_dim not in HEAD_DIMS:
        return f"head_dim {head_dim} not in {HEAD_DIMS}"
    if gate is not None:
        hidden = gate.w1.shape[0]
        width = 2 if is_per_head_gate(gate) else 2 * heads
        shapes = [tuple(t.shape) for t in gate]
        if shapes != [(hidden, width), (hidden,), (width, hidden), (width,)]:
            return f"gate weight shapes {shapes} fit neither the head-mixing nor the per-head gate"
        if hidden > MAX_GATE_HIDDEN:
            return f"gate hidden width {hidden} > {MAX_GATE_HIDDEN}"
        if not is_per_head_gate(gate) and heads > MAX_MIX_HEADS:
            return f"{heads} heads > {MAX_MIX_HEADS} for the head-mixing gate"
        activations = q.shape[0] * hidden * k.shape[2] ** 2
        if not is_per_head_gate(gate) and activations >= 2**31:
            return (
                f"the head-mixing gate's saved activations (batch x hidden x N^2 = {activations:,} values)"
                " exceed the kernels' 32-bit offsets (split the batch)"
            )
        if not is_per_head_gate(gate) and q.dtype == torch.float32 and heads > MAX_MIX_HEADS_FP32:
            return (
                f"float32 with {heads} heads > {MAX_MIX_HEADS_FP32}: the head-mixing kernels' float32 tiles of"
                " 16 heads need more shared memory than sm_90 has (bf16 and fp16 take up to 16 heads)"
            )
    if attn_mask is not None:
        if attn_mask.requires_grad:
            return "attn_mask requires grad"
        if (
            attn_mask.dim() > 4
            or any(s != 1 for s in attn_mask.shape[-3:-1])
            or (attn_mask.dim() == 4 and attn_mask.shape[1] != 1)
        ):
            return "only key masks (broadcastable from (B, 1, 1, N)) are supported"
        if attn_mask.dim() == 4 and attn_mask.shape[0] not in (1, q.shape[0]):
            return "attn_mask batch size does not match"
        if attn_mask.shape[-1] not in (1, k.shape[2]):
            return "attn_mask key count does not match"
    return None


def can_use_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_int: torch.Tensor | None = None,
    gate: GateWeights | None = None,
    request: MapRequest | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> bool:
    """True when `fused_interaction_attention` can take this call on this device (False on CPU)."""
    return fused_unsupported_reason(q, k, v, scale, q_int, gate, request, attn_mask, dropout_p) is None


def should_use_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_int: torch.Tensor | None = None,
    gate: GateWeights | None = None,
    request: MapRequest | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> bool:
    """The dispatch's decision under the backend in force (see the module docstring)."""
    backend = attention_backend()
    # under torch.compile, "auto" leaves the layer to the compiler (the kernels are opaque to it); "fused" insists
    if backend == "reference" or q_int is None or (backend == "auto" and torch.compiler.is_compiling()):
        return False
    reason = fused_unsupported_reason(q, k, v, scale, q_int, gate, request, attn_mask, dropout_p)
    if backend == "fused" and reason is not None:
        raise RuntimeError(f"interaction attention backend 'fused' cannot run this call: {reason}")
    return reason is None


def fused_interaction_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_int: torch.Tensor | None = None,
    gate: GateWeights | None = None,
    request: MapRequest | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Interaction attention (Eq. 3-9) through the Triton kernels; semantics of `interaction_attention`.

    q, k, v, q_int: (B, H, N, d). Returns out (B, H, N, d) and the requested maps {name: (B, H, R, N)}.
    Raises ValueError where the kernels cannot compute the call (see `fused_unsupported_reason`), or where
    the tensors are not on CUDA (except under TRITON_INTERPRET=1, so that the kernels can be checked on the CPU).
    """
    reason = fused_unsupported_reason(
        q, k, v, scale, q_int, gate, request, attn_mask, dropout_p, dispatch=False
    )
    if reason is None and not q.is_cuda and not _interpreting():
        reason = f"tensors on {q.device}, the kernels need CUDA (or TRITON_INTERPRET=1)"
    if reason is not None:
        raise ValueError(f"fused interaction attention: {reason}")
    bias = _key_mask_bias(attn_mask, q.shape[0], k.shape[2])
    weights = tuple(gate) if gate is not None else (None,) * 4
    out = _FusedInteractionAttention.apply(q, k, v, q_int, bias, scale, *weights)
    from lfi.models.interaction_attention import interaction_maps  # lazy: that module imports this one

    if request is None:
        return out, {}
    return out, interaction_maps(request.names, q, q_int, k, scale, request.rows, attn_mask, gate)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------


# (BM, BN, num_warps, num_stages) per (kernel, gate mode). The head-mixing kernels hold every head of a tile,
# (HP, BM, BN) tensors, so their tiles are small, and they are not software-pipelined (num_stages=1): on sm_90
# the pipeliner would keep several copies of the (HP, BN, d) key and value tiles in shared memory, past its
# 227 KB. Under the interpreter: the smallest tiles tl.dot allows, so that tiny test shapes still span several
# tiles. A dict so that benchmarks/attention_kernels.py --blocks can try others (a sweep on an H200:
# benchmarks/results/attention_kernels_tiles_h200.json).
BLOCKS: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("lse", "none"): (64, 64, 4, 3),
    ("fwd", "none"): (64, 64, 4, 3),
    ("fwd", "per_head"): (32, 32, 8, 3),
    ("fwd", "mix"): (16, 16, 8, 1),
    ("rowstats", "none"): (64, 64, 4, 3),
    ("rowstats", "per_head"): (32, 32, 8, 3),
    ("bwd", "none"): (32, 64, 4, 3),
    ("bwd", "per_head"): (32, 32, 8, 3),
    ("dq", "none"): (64, 32, 4, 3),
    ("dq", "per_head"): (32, 32, 8, 3),
    ("gate_bwd", "mix"): (16, 16, 8, 1),
    ("dkdv", "mix"): (32, 32, 4, 2),
    ("dq", "mix"): (32, 32, 4, 2),
}


def _blocks(kernel: str, mode: str) -> tuple[int, int, dict[str, int]]:
    """-> BM, BN and the launch options (num_warps, num_stages) of a kernel."""
    if _interpreting():
        return 16, 16, {"num_warps": 1}
    bm, bn, warps, stages = BLOCKS[(kernel, "none" if kernel == "lse" else mode)]
    return bm, bn, {"num_warps": warps, "num_stages": stages}


def _bhn(t: torch.Tensor) -> tuple[int, int, int]:
    """Batch, head and token strides of a (B, H, N, d) tensor whose d stride is 1."""
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _gate_meta(mode: str, w1: torch.Tensor | None) -> tuple[int, int]:
    """(E, EP): the gate's hidden width and its power-of-two padding (placeholders without a gate)."""
    if w1 is None:
        return 1, 2
    hidden = w1.shape[0]
    return hidden, max(2, _next_power_of_2(hidden))


def _mix_meta(heads: int, hidden: int) -> tuple[int, int, int]:
    """(HP, EP, ES) of the head-mixing kernels: heads and hidden width padded to powers of two, at least 8 and
    16 (the gate's matrix products need 2HP >= 16 and EP >= 16), and the hidden units' column stride: 2 where
    they fill at most half of EP (E <= 8, the default 8 among them), so that the kernels evaluate GELU on the
    even columns only (the padded units' GELU is most of the gate's special-function work), else 1."""
    hp, ep = max(8, _next_power_of_2(heads)), max(16, _next_power_of_2(hidden))
    return hp, ep, 2 if 2 * hidden <= ep else 1


def _next_power_of_2(n: int) -> int:
    # not triton's: the weight packing is plain torch and is tested on machines without triton
    return 1 << (n - 1).bit_length()


def _mix_channels(heads: int, device: torch.device) -> torch.Tensor:
    """perm[2h + c] = c H + h: the kernels' channel order (C_AGT, C_VFM of head h side by side) in terms of
    the order of `gate_values` (all C_AGT heads, then all C_VFM heads)."""
    h = torch.arange(heads, device=device)
    return torch.stack([h, h + heads], dim=1).flatten()


def _mix_weights(w1, b1, w2, b2, heads: int, keys: int):
    """The gate's weights as the head-mixing kernels take them (see `_mix`): fp32, zero-padded, channel order
    of `_mix_channels`, hidden unit e in column ES e (`_mix_meta`), the key count folded into W1: W1T (2HP, EP),
    B1 (EP,), W2T (EP, 2HP), B2 (2HP,)."""
    hidden = w1.shape[0]
    hp, ep, es = _mix_meta(heads, hidden)
    units = slice(0, es * hidden, es)
    perm = _mix_channels(heads, w1.device)
    f32 = dict(device=w1.device, dtype=torch.float32)
    w1t = torch.zeros(2 * hp, ep, **f32)
    # in fp32 before the key count is folded in: N w1 rounded to bf16 put the weight gradients ~1e-2 off
    w1t[: 2 * heads, units] = w1.detach().float().t()[perm] * keys
    b1p = torch.zeros(ep, **f32)
    b1p[units] = b1.detach()
    w2t = torch.zeros(ep, 2 * hp, **f32)
    w2t[units, : 2 * heads] = w2.detach()[perm].t()
    b2p = torch.zeros(2 * hp, **f32)
    b2p[: 2 * heads] = b2.detach()[perm]
    return w1t, b1p, w2t, b2p


def _mix_weight_grads(dw: torch.Tensor, heads: int, hidden: int, keys: int):
    """Sum the programs' rows of DW (`_mix_gate_bwd_kernel`) and map them back to dw1, db1, dw2, db2."""
    hp, ep, es = _mix_meta(heads, hidden)
    units = slice(0, es * hidden, es)
    inv = torch.argsort(_mix_channels(heads, dw.device))
    parts = dw.sum(0)
    c2, n1 = 2 * hp, 2 * hp * ep
    dw1t = parts[:n1].view(c2, ep)[: 2 * heads, units][inv]
    dw2t = parts[n1 : 2 * n1].view(ep, c2)[units, : 2 * heads][:, inv]
    db1 = parts[2 * n1 : 2 * n1 + ep][units]
    db2 = parts[2 * n1 + ep :][: 2 * heads][inv]
    return dw1t.t() * keys, db1, dw2t.t(), db2


class _Launch:
    """What every launcher needs from (q, bias): shapes, device, dot precision, the key mask's buffer."""

    def __init__(self, q: torch.Tensor, bias: torch.Tensor | None, scale: float) -> None:
        self.B, self.H, self.N, self.D = q.shape
        self.device = q.device
        # bf16/fp16 dots run on the matrix units whatever this says; fp32 ones in full precision (tests)
        self.prec = "ieee" if q.dtype == torch.float32 else "tf32"
        self.has_kb = bias is not None
        self.kb = bias if bias is not None else torch.zeros(1, device=q.device)
        self.skbb = 0 if bias is None or bias.shape[0] == 1 else bias.stride(0)
        self.scale = scale
        self.scale_log2 = scale * _kernels.LOG2E_VALUE


def _row_lse(run: _Launch, q, qi, k, mode):
    """Row log-sum-exps (B, H, N) fp32 (log2 domain) of both softmaxes."""
    lse_v = torch.empty((run.B, run.H, run.N), device=run.device, dtype=torch.float32)
    lse_a = torch.empty_like(lse_v)
    bm, bn, launch = _blocks("lse", mode)
    _kernels._lse_kernel[(triton.cdiv(run.N, bm), run.B * run.H)](
        q, qi, k, run.kb, lse_v, lse_a, *_bhn(q), *_bhn(qi), *_bhn(k), run.skbb, run.N, run.H,
        run.scale_log2, HAS_KB=run.has_kb, BM=bm, BN=bn, D=run.D, PREC=run.prec, **launch,
    )  # fmt: skip
    return lse_v, lse_a


def _forward(q, k, v, qi, bias, scale, w1, b1, w2, b2, mode, mix_weights):
    """-> out (B, H, N, d) (a view of a (B, N, H, d) buffer), lse_v, lse_a (B, H, N) fp32 (log2 domain).

    mix_weights: `_mix_weights(...)` for mode "mix" (prepared once per call, shared with the backward)."""
    run = _Launch(q, bias, scale)
    B, H, N, D = q.shape
    lse_v, lse_a = _row_lse(run, q, qi, k, mode)
    out = torch.empty((B, N, H, D), device=run.device, dtype=q.dtype)
    common = (*_bhn(q), *_bhn(qi), *_bhn(k), *_bhn(v), run.skbb, out.stride(0), out.stride(2), out.stride(1))
    bm, bn, launch = _blocks("fwd", mode)
    if mode == "mix":
        hp, ep, es = _mix_meta(H, w1.shape[0])
        _mix._mix_fwd_kernel[(triton.cdiv(N, bm), B)](
            q, qi, k, v, run.kb, lse_v, lse_a, *mix_weights, out, *common,
            N, H, run.scale_log2, HAS_KB=run.has_kb, HP=hp, EP=ep, ES=es, BM=bm, BN=bn, D=D, PREC=run.prec,
            PREC_G=run.prec, **launch,
        )  # fmt: skip
    else:
        E, EP = _gate_meta(mode, w1)
        _kernels._ph_fwd_kernel[(triton.cdiv(N, bm), B * H)](
            q, qi, k, v, run.kb, lse_v, lse_a, *_weights_or_placeholders(w1, b1, w2, b2, run.device), out,
            *common, N, H, run.scale_log2, float(N),
            GATED=mode == "per_head", E=E, EP=EP, HAS_KB=run.has_kb, BM=bm, BN=bn, D=D, PREC=run.prec,
            **launch,
        )  # fmt: skip
    return out.transpose(1, 2), lse_v, lse_a


def _weights_or_placeholders(w1, b1, w2, b2, device):
    """fp32-contiguous gate weights; without a gate, a zero buffer the ungated kernels never read from."""
    if w1 is None:
        zero = torch.zeros(16, device=device)
        return zero, zero, zero, zero
    return tuple(w.detach().float().contiguous() for w in (w1, b1, w2, b2))


def _mix_backward(run: _Launch, q, k, v, qi, hidden, mix_weights, lse_v, lse_a, do):
    """Head-mixing gate: the gate kernel (row statistics, gate gradients, z and du per pair), then the dK/dV
    and the dQ kernels. -> (dq, dk, dv, dqi) (B, N, H, d) in the input dtype, the gate weights' gradients."""
    B, H, N, D = q.shape
    hp, ep, es = _mix_meta(H, hidden)
    w1t, b1p, w2t, b2p = mix_weights
    d_v = torch.empty((B, H, N), device=run.device, dtype=torch.float32)
    d_a = torch.empty_like(d_v)
    # the gate's activations per pair: bf16 for bf16/fp16 inputs (fp32 copies made the I-ViT-S step ~1.9x
    # slower, H200), fp32 for fp32 inputs (tests hold those to 1e-4)
    act_dtype = torch.float32 if q.dtype == torch.float32 else torch.bfloat16
    z = torch.empty((B, hidden, N, N), device=run.device, dtype=act_dtype)
    du = torch.empty_like(z)
    bm, bn, launch = _blocks("gate_bwd", "mix")
    grid = (triton.cdiv(N, bm), B)
    dw = torch.empty((grid[0] * grid[1], 4 * hp * ep + ep + 2 * hp), device=run.device, dtype=torch.float32)
    strides = (*_bhn(q), *_bhn(qi), *_bhn(k), *_bhn(v), run.skbb, *_bhn(do))
    _mix._mix_gate_bwd_kernel[grid](
        q, qi, k, v, run.kb, lse_v, lse_a, w1t, b1p, w2t, b2p, do, d_v, d_a, z, du, dw, *strides,
        N, H, run.scale_log2, E=hidden, HAS_KB=run.has_kb, HP=hp, EP=ep, ES=es, BM=bm, BN=bn, D=D,
        PREC=run.prec, PREC_G=run.prec, **launch,
    )  # fmt: skip
    dk = torch.empty((B, N, H, D), device=run.device, dtype=q.dtype)
    dv, dq, dqi = (torch.empty_like(dk) for _ in range(3))
    per_head = (*strides, dk.stride(0), dk.stride(2), dk.stride(1), N, H, run.scale_log2, run.scale)
    consts = dict(E=hidden, HAS_KB=run.has_kb, HP=hp, EP=ep, ES=es, D=D, PREC=run.prec)
    bm, bn, launch = _blocks("dkdv", "mix")
    _mix._mix_dkdv_kernel[(triton.cdiv(N, bn), B * H)](
        q, qi, k, v, run.kb, lse_v, lse_a, w1t, w2t, b2p, do, d_v, d_a, z, du, dk, dv, *per_head,
        BM=bm, BN=bn, **launch, **consts,
    )  # fmt: skip
    bm, bn, launch = _blocks("dq", "mix")
    _mix._mix_dq_kernel[(triton.cdiv(N, bm), B * H)](
        q, qi, k, v, run.kb, lse_v, lse_a, w1t, w2t, b2p, do, d_v, d_a, z, du, dq, dqi, *per_head,
        BM=bm, BN=bn, **launch, **consts,
    )  # fmt: skip
    return (dq, dk, dv, dqi), _mix_weight_grads(dw, H, hidden, N)


def _per_head_backward(run: _Launch, q, k, v, qi, w1, b1, w2, b2, mode, lse_v, lse_a, do):
    """No gate or the per-head gate: row statistics, then the dK/dV (and gate) kernel and the dQ kernel.
    -> (dq, dk, dv, dqi) (B, N, H, d) in the input dtype, and the gate weights' gradients (or Nones)."""
    B, H, N, D = q.shape
    E, EP = _gate_meta(mode, w1)
    wts = _weights_or_placeholders(w1, b1, w2, b2, run.device)
    gated = mode == "per_head"
    d_v = torch.empty((B, H, N), device=run.device, dtype=torch.float32)
    d_a = torch.empty_like(d_v)
    strides = (*_bhn(q), *_bhn(qi), *_bhn(k), *_bhn(v), run.skbb, *_bhn(do))
    bm, bn, launch = _blocks("rowstats", mode)
    _kernels._ph_bwd_rowstats_kernel[(triton.cdiv(N, bm), B * H)](
        q, qi, k, v, run.kb, lse_v, lse_a, *wts, do, d_v, d_a, *strides, N, H, run.scale_log2, float(N),
        GATED=gated, E=E, EP=EP, HAS_KB=run.has_kb, BM=bm, BN=bn, D=D, PREC=run.prec, **launch,
    )  # fmt: skip
    dk = torch.empty((B, N, H, D), device=run.device, dtype=q.dtype)
    dv, dq, dqi = (torch.empty_like(dk) for _ in range(3))
    tail = (dk.stride(0), dk.stride(2), dk.stride(1), N, H, run.scale_log2, run.scale, float(N))
    consts = dict(GATED=gated, E=E, EP=EP, HAS_KB=run.has_kb, D=D, PREC=run.prec)
    bm, bn, launch = _blocks("bwd", mode)
    grid = (triton.cdiv(N, bn), B * H)
    dw = torch.zeros((grid[0] * grid[1] if gated else 1, 8 * EP), device=run.device, dtype=torch.float32)
    _kernels._ph_bwd_kernel[grid](
        q, qi, k, v, run.kb, lse_v, lse_a, *wts, do, d_v, d_a, dk, dv, dw, *strides, *tail,
        BM=bm, BN=bn, **launch, **consts,
    )  # fmt: skip
    bm, bn, launch = _blocks("dq", mode)
    _kernels._ph_dq_kernel[(triton.cdiv(N, bm), B * H)](
        q, qi, k, v, run.kb, lse_v, lse_a, *wts, do, d_v, d_a, dq, dqi, *strides, *tail,
        BM=bm, BN=bn, **launch, **consts,
    )  # fmt: skip
    if not gated:
        return (dq, dk, dv, dqi), (None,) * 4
    parts = dw.sum(0).view(8, EP)
    return (
        (dq, dk, dv, dqi),
        (
            torch.stack([parts[0, :E], parts[1, :E]], dim=1),  # dw1 (E, 2): columns C_AGT, C_VFM
            parts[2, :E],
            torch.stack([parts[3, :E], parts[4, :E]], dim=0),  # dw2 (2, E)
            torch.stack([parts[5, 0], parts[6, 0]]),
        ),
    )


def _backward(q, k, v, qi, bias, scale, w1, b1, w2, b2, mode, mix_weights, lse_v, lse_a, dout):
    """-> dq, dk, dv, dq_int (B, H, N, d) in the input dtype, and dw1, db1, dw2, db2 (or Nones)."""
    run = _Launch(q, bias, scale)
    do = _unit_last(dout.to(q.dtype))
    if mode == "mix":
        grads, gate_grads = _mix_backward(run, q, k, v, qi, w1.shape[0], mix_weights, lse_v, lse_a, do)
    else:
        grads, gate_grads = _per_head_backward(run, q, k, v, qi, w1, b1, w2, b2, mode, lse_v, lse_a, do)
    grads = tuple(g.to(q.dtype).transpose(1, 2) for g in grads)
    gate_grads = tuple(
        None if g is None else g.to(w.dtype) for g, w in zip(gate_grads, (w1, b1, w2, b2), strict=True)
    )
    return grads, gate_grads


class _FusedInteractionAttention(torch.autograd.Function):
    """out = C_F V with C_F from the kernels; backward recomputes probabilities from the saved lse."""

    @staticmethod
    def forward(ctx, q, k, v, q_int, bias, scale, w1, b1, w2, b2):
        q, k, v, q_int = (_unit_last(t) for t in (q, k, v, q_int))
        mode = "none" if w1 is None else ("per_head" if w1.shape[1] == 2 else "mix")
        heads, keys = q.shape[1], k.shape[2]
        mix_weights = _mix_weights(w1, b1, w2, b2, heads, keys) if mode == "mix" else (None,) * 4
        out, lse_v, lse_a = _forward(q, k, v, q_int, bias, scale, w1, b1, w2, b2, mode, mix_weights)
        ctx.save_for_backward(q, k, v, q_int, bias, w1, b1, w2, b2, lse_v, lse_a, *mix_weights)
        ctx.scale, ctx.mode = scale, mode
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, q_int, bias, w1, b1, w2, b2, lse_v, lse_a, *mix_weights = ctx.saved_tensors
        (dq, dk, dv, dqi), (dw1, db1, dw2, db2) = _backward(
            q, k, v, q_int, bias, ctx.scale, w1, b1, w2, b2, ctx.mode, mix_weights, lse_v, lse_a, dout
        )
        return dq, dk, dv, dqi, None, None, dw1, db1, dw2, db2
