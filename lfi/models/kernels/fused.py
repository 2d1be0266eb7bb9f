"""Fused interaction attention: the Triton kernels behind `interaction_attention`'s exact signature.

`fused_interaction_attention` computes what `lfi.models.interaction_attention.interaction_attention` computes
for a gated layer (same arguments, same outputs, gradients for q, k, v, q_int and the gate weights) without
keeping any pairwise tensor across the forward and backward (the backward alone holds dP of both maps and C_F,
B x 3H x N x N, for one layer at a time). Requested maps are limited to their first rows (MapRequest(rows=k)); those rows are
recomputed in plain torch by `interaction_maps` (cheap, and their gradients flow through autograd).

`fused_unsupported_reason` says which calls the kernels take. Which layers use them is decided when a layer
is built (lfi.models.backends); this module only computes.

The kernels implement the head-mixing gate of Eq. 5 (`gate_values`: w1 (E, 2H)) and nothing else: a layer
without a gate runs as two fused SDPA calls (faster than any kernel here), so there is no ungated kernel.
"""

from __future__ import annotations

import os

import torch

from lfi.models.interaction_attention import GateWeights, MapRequest, interaction_maps, key_counts

try:
    import triton

    from lfi.models.kernels import _mix
    from lfi.models.kernels import _triton as _kernels
except ImportError:  # the CPU keeps the reference path
    triton = None
    _kernels = None
    _mix = None

HEAD_DIMS = (32, 64)
# the kernels hold every head of a tile, and the gate's hidden layer, in registers
MAX_MIX_HEADS = 16
MAX_MIX_HEADS_FP32 = 8
MAX_GATE_HIDDEN = 32
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    if gate is None:
        return "no gate: C_F V = (C_AGT V + C_VFM V) / 2 runs as two fused SDPA calls, which are faster"
    if gate.w2 is None:
        return "the per-pair linear gate (gate_hidden=0) has no kernel: the reference path runs it"
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
    hidden = gate.w1.shape[0]
    shapes = [tuple(t.shape) for t in gate]
    expected = [(hidden, 2 * heads), (hidden,), (2 * heads, hidden), (2 * heads,)]
    if shapes != expected:
        return f"gate weight shapes {shapes}: expected {expected} (w1, b1, w2, b2 of the gate over {heads} heads)"
    if hidden > MAX_GATE_HIDDEN:
        return f"gate hidden width {hidden} > {MAX_GATE_HIDDEN}"
    if heads > MAX_MIX_HEADS:
        return f"{heads} heads > {MAX_MIX_HEADS}"
    activations = q.shape[0] * 2 * heads * k.shape[2] ** 2
    if activations >= 2**31:
        return (
            f"the backward's per-pair dP (batch x 2 heads x N^2 = {activations:,} values) exceeds the kernels'"
            " 32-bit offsets (split the batch)"
        )
    if q.dtype == torch.float32 and heads > MAX_MIX_HEADS_FP32:
        return (
            f"float32 with {heads} heads > {MAX_MIX_HEADS_FP32}: the kernels' float32 tiles of 16 heads need"
            " more shared memory than sm_90 has (bf16 and fp16 take up to 16 heads)"
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
    """Interaction attention (Eq. 3-9) of a gated layer through the Triton kernels; semantics of
    `interaction_attention`.

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
    # the gate reads each batch element's real key count (`gate_values`): (b,), b in {1, B}
    keys = key_counts(attn_mask, k.shape[2])
    keys = keys.view(-1) if isinstance(keys, torch.Tensor) else torch.full((1,), float(keys), device=q.device)
    out = _FusedInteractionAttention.apply(q, k, v, q_int, bias, keys, scale, *gate)
    if request is None:
        return out, {}
    return out, interaction_maps(request.names, q, q_int, k, scale, request.rows, attn_mask, gate)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------


# (BM, BN, num_warps, num_stages) per kernel. The gated kernels hold every head of a tile, (HP, BM, BN) tensors,
# so their tiles are small, and they are not software-pipelined (num_stages=1): on sm_90 the pipeliner would
# keep several copies of the (HP, BN, d) key and value tiles in shared memory, past its 227 KB. Under the
# interpreter: the smallest tiles tl.dot allows, so that tiny test shapes still span several tiles. A dict so
# that benchmarks/attention_kernels.py --blocks can try others (a sweep on an H200:
# benchmarks/results/attention_kernels_tiles_h200.json).
BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "lse": (64, 64, 4, 3),
    "fwd": (16, 16, 8, 1),
    "gate_bwd": (16, 16, 8, 1),
    "dkdv": (32, 32, 4, 2),
    "dq": (32, 32, 4, 2),
}


def _blocks(kernel: str) -> tuple[int, int, dict[str, int]]:
    """-> BM, BN and the launch options (num_warps, num_stages) of a kernel."""
    if _interpreting():
        return 16, 16, {"num_warps": 1}
    bm, bn, warps, stages = BLOCKS[kernel]
    return bm, bn, {"num_warps": warps, "num_stages": stages}


def _bhn(t: torch.Tensor) -> tuple[int, int, int]:
    """Batch, head and token strides of a (B, H, N, d) tensor whose d stride is 1."""
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _mix_meta(heads: int, hidden: int) -> tuple[int, int, int]:
    """(HP, EP, ES) of the kernels: heads and hidden width padded to powers of two, at least 8 and 16 (the
    gate's matrix products need 2HP >= 16 and EP >= 16), and the hidden units' column stride: 2 where they fill
    at most half of EP (E <= 8, the default 8 among them), so that the kernels evaluate GELU on the even
    columns only (the padded units' GELU is most of the gate's special-function work), else 1."""
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


def _mix_weights(w1, b1, w2, b2, heads: int, keys: torch.Tensor):
    """The gate's weights as the kernels take them (see `_mix`): fp32, zero-padded, channel order of
    `_mix_channels`, hidden unit e in column ES e (`_mix_meta`), each batch element's key count folded into
    W1. keys: (b,) fp32, b in {1, B}. -> W1T (b, 2HP, EP), B1 (EP,), W2T (EP, 2HP), B2 (2HP,)."""
    hidden = w1.shape[0]
    hp, ep, es = _mix_meta(heads, hidden)
    units = slice(0, es * hidden, es)
    perm = _mix_channels(heads, w1.device)
    f32 = dict(device=w1.device, dtype=torch.float32)
    w1t = torch.zeros(2 * hp, ep, **f32)
    # in fp32 before the key count is folded in: N w1 rounded to bf16 put the weight gradients ~1e-2 off
    w1t[: 2 * heads, units] = w1.detach().float().t()[perm]
    b1p = torch.zeros(ep, **f32)
    b1p[units] = b1.detach()
    w2t = torch.zeros(ep, 2 * hp, **f32)
    w2t[units, : 2 * heads] = w2.detach()[perm].t()
    b2p = torch.zeros(2 * hp, **f32)
    b2p[: 2 * heads] = b2.detach()[perm]
    return w1t * keys.float().view(-1, 1, 1), b1p, w2t, b2p


def _mix_weight_grads(dw: torch.Tensor, heads: int, hidden: int, keys: torch.Tensor):
    """Sum the programs' rows of DW (B, programs per batch element, width) (`_mix_gate_bwd_kernel`) and map
    them back to dw1, db1, dw2, db2. A program's dw1t is the gradient of its batch element's W1T = n_b w1^T,
    so dw1 = sum_b n_b dW1T_b. keys: (b,) as `_mix_weights` took them."""
    hp, ep, es = _mix_meta(heads, hidden)
    units = slice(0, es * hidden, es)
    inv = torch.argsort(_mix_channels(heads, dw.device))
    c2, n1 = 2 * hp, 2 * hp * ep
    dw1t = (dw[:, :, :n1].sum(1) * keys.float().view(-1, 1)).sum(0).view(c2, ep)[: 2 * heads, units][inv]
    parts = dw[:, :, n1:].sum((0, 1))
    dw2t = parts[:n1].view(ep, c2)[units, : 2 * heads][:, inv]
    db1 = parts[n1 : n1 + ep][units]
    db2 = parts[n1 + ep :][: 2 * heads][inv]
    return dw1t.t(), db1, dw2t.t(), db2


class _Launch:
    """What every launcher needs from (q, bias, W1T): shapes, device, dot precision, the key mask's buffer, the
    batch strides of the key mask and of W1T (0 where one copy serves every batch element)."""

    def __init__(self, q: torch.Tensor, bias: torch.Tensor | None, scale: float, w1t: torch.Tensor) -> None:
        self.B, self.H, self.N, self.D = q.shape
        self.device = q.device
        # bf16/fp16 dots run on the matrix units whatever this says; fp32 ones in full precision (tests)
        self.prec = "ieee" if q.dtype == torch.float32 else "tf32"
        self.has_kb = bias is not None
        self.kb = bias if bias is not None else torch.zeros(1, device=q.device)
        self.skbb = 0 if bias is None or bias.shape[0] == 1 else bias.stride(0)
        self.sw1b = 0 if w1t.shape[0] == 1 else w1t.stride(0)
        self.scale = scale
        self.scale_log2 = scale * _kernels.LOG2E_VALUE


def _row_lse(run: _Launch, q, qi, k):
    """Row log-sum-exps (B, H, N) fp32 (log2 domain) of both softmaxes."""
    lse_v = torch.empty((run.B, run.H, run.N), device=run.device, dtype=torch.float32)
    lse_a = torch.empty_like(lse_v)
    bm, bn, launch = _blocks("lse")
    _kernels._lse_kernel[(triton.cdiv(run.N, bm), run.B * run.H)](
        q, qi, k, run.kb, lse_v, lse_a, *_bhn(q), *_bhn(qi), *_bhn(k), run.skbb, run.N, run.H,
        run.scale_log2, HAS_KB=run.has_kb, BM=bm, BN=bn, D=run.D, PREC=run.prec, **launch,
    )  # fmt: skip
    return lse_v, lse_a


def _forward(run: _Launch, q, k, v, qi, hidden: int, mix_weights):
    """-> out (B, H, N, d) (a view of a (B, N, H, d) buffer), lse_v, lse_a (B, H, N) fp32 (log2 domain).

    mix_weights: `_mix_weights(...)` (prepared once per call, shared with the backward)."""
    B, H, N, D = q.shape
    lse_v, lse_a = _row_lse(run, q, qi, k)
    out = torch.empty((B, N, H, D), device=run.device, dtype=q.dtype)
    strides = (*_bhn(q), *_bhn(qi), *_bhn(k), *_bhn(v), run.skbb, run.sw1b)
    hp, ep, es = _mix_meta(H, hidden)
    bm, bn, launch = _blocks("fwd")
    _mix._mix_fwd_kernel[(triton.cdiv(N, bm), B)](
        q, qi, k, v, run.kb, lse_v, lse_a, *mix_weights, out, *strides, out.stride(0), out.stride(2),
        out.stride(1), N, H, run.scale_log2, HAS_KB=run.has_kb, HP=hp, EP=ep, ES=es, BM=bm, BN=bn, D=D,
        PREC=run.prec, **launch,
    )  # fmt: skip
    return out.transpose(1, 2), lse_v, lse_a


def _backward(run: _Launch, q, k, v, qi, hidden: int, keys, mix_weights, lse_v, lse_a, do):
    """The gate kernel (row statistics, gate gradients, dP and C_F per pair), then the dK/dV and the dQ kernels.
    -> (dq, dk, dv, dqi) (B, N, H, d) in the input dtype, the gate weights' gradients (fp32)."""
    B, H, N, D = q.shape
    hp, ep, es = _mix_meta(H, hidden)
    d_v = torch.empty((B, H, N), device=run.device, dtype=torch.float32)
    d_a = torch.empty_like(d_v)
    # per pair: dP of both maps and C_F, bf16 for bf16/fp16 inputs (fp32 copies of the gate's activations made
    # the I-ViT-S step ~1.9x slower, H200), fp32 for fp32 inputs (tests hold those to 1e-4)
    act_dtype = torch.float32 if q.dtype == torch.float32 else torch.bfloat16
    dp = torch.empty((B, 2 * H, N, N), device=run.device, dtype=act_dtype)
    cf = torch.empty((B, H, N, N), device=run.device, dtype=act_dtype)
    bm, bn, launch = _blocks("gate_bwd")
    grid = (triton.cdiv(N, bm), B)
    dw = torch.empty((B, grid[0], 4 * hp * ep + ep + 2 * hp), device=run.device, dtype=torch.float32)
    _mix._mix_gate_bwd_kernel[grid](
        q, qi, k, v, run.kb, lse_v, lse_a, *mix_weights, do, d_v, d_a, dp, cf, dw, *_bhn(q), *_bhn(qi),
        *_bhn(k), *_bhn(v), run.skbb, run.sw1b, *_bhn(do), N, H, run.scale_log2, HAS_KB=run.has_kb, HP=hp,
        EP=ep, ES=es, BM=bm, BN=bn, D=D, PREC=run.prec, **launch,
    )  # fmt: skip
    dk = torch.empty((B, N, H, D), device=run.device, dtype=q.dtype)
    dv, dq, dqi = (torch.empty_like(dk) for _ in range(3))
    strides = (*_bhn(q), *_bhn(qi), *_bhn(k), run.skbb, *_bhn(do), dk.stride(0), dk.stride(2), dk.stride(1))
    tail = (N, H, run.scale_log2, run.scale)
    bm, bn, launch = _blocks("dkdv")
    _mix._mix_dkdv_kernel[(triton.cdiv(N, bn), B * H)](
        q, qi, k, run.kb, lse_v, lse_a, do, d_v, d_a, dp, cf, dk, dv, *strides, *tail,
        HAS_KB=run.has_kb, BM=bm, BN=bn, D=D, PREC=run.prec, **launch,
    )  # fmt: skip
    bm, bn, launch = _blocks("dq")
    _mix._mix_dq_kernel[(triton.cdiv(N, bm), B * H)](
        q, qi, k, run.kb, lse_v, lse_a, do, d_v, d_a, dp, cf, dq, dqi, *strides, *tail,
        HAS_KB=run.has_kb, BM=bm, BN=bn, D=D, PREC=run.prec, **launch,
    )  # fmt: skip
    return (dq, dk, dv, dqi), _mix_weight_grads(dw, H, hidden, keys)


class _FusedInteractionAttention(torch.autograd.Function):
    """out = C_F V with C_F from the kernels; backward recomputes probabilities from the saved lse."""

    @staticmethod
    def forward(ctx, q, k, v, q_int, bias, keys, scale, w1, b1, w2, b2):
        q, k, v, q_int = (_unit_last(t) for t in (q, k, v, q_int))
        mix_weights = _mix_weights(w1, b1, w2, b2, q.shape[1], keys)
        run = _Launch(q, bias, scale, mix_weights[0])
        out, lse_v, lse_a = _forward(run, q, k, v, q_int, w1.shape[0], mix_weights)
        ctx.save_for_backward(q, k, v, q_int, bias, keys, w1, b1, w2, b2, lse_v, lse_a, *mix_weights)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, q_int, bias, keys, w1, b1, w2, b2, lse_v, lse_a, *mix_weights = ctx.saved_tensors
        run = _Launch(q, bias, ctx.scale, mix_weights[0])
        do = _unit_last(dout.to(q.dtype))
        grads, gate_grads = _backward(run, q, k, v, q_int, w1.shape[0], keys, mix_weights, lse_v, lse_a, do)
        dq, dk, dv, dqi = (g.to(q.dtype).transpose(1, 2) for g in grads)
        dw1, db1, dw2, db2 = (g.to(w.dtype) for g, w in zip(gate_grads, (w1, b1, w2, b2), strict=True))
        return dq, dk, dv, dqi, None, None, None, dw1, db1, dw2, db2
