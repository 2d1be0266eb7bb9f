"""Triton kernels of interaction attention (paper Eq. 3-9): the row statistics and the helpers of `_mix`.

Nothing of size B x H x N x N ever reaches device memory: the probabilities of both softmaxes are recomputed
tile by tile from the saved row log-sum-exps, the gate runs on those tiles, and C_F V is accumulated on chip.

Notation (per batch element b, head h, query i, key j; s = scale * q.k; n_b the keys batch element b attends):
  P_v = softmax_j(s(q)), P_a = softmax_j(s(q_int)),
  gate (c runs over the 2H maps [P_a heads; P_v heads]):  x_c = n_b P_c,  u = W1 x + b1,  z = gelu(u),
  t = W2 z + b2,  g = sigmoid(t),  C_F = g_a P_a + g_v P_v,  out = C_F V.
Backward (dO given): dC_F = dO V^T, dg_c = dC_F P_c, dt = dg g (1 - g), dz = W2^T dt, du = dz gelu'(u),
  dx = W1^T du, dP_c = dC_F g_c + n_b dx_c, dS_c = P_c (dP_c - D_c) with D_c = rowsum(P_c dP_c).
  D needs every key of a row before any dS can be formed, so the backward is two passes: row statistics
  (D), then the gradients.

The gate at pair (i, j) reads every head's probabilities, so the gated kernels (`_mix`) own one (batch, query
tile) with all its heads; this module holds what they share with `_lse_kernel`, which computes the row
log-sum-exps per (batch, head, query tile) beforehand. Logits are kept in the log2 domain (scaled by log2(e))
so that exp2 can be used; lse buffers are internal.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E_VALUE = 1.4426950408889634
# jit functions may read globals only as constexprs
LOG2E = tl.constexpr(LOG2E_VALUE)
INV_SQRT2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _gelu_with_grad(u):
    """gelu(u) and gelu'(u) from one erf: the gate's backward is bound by its special functions."""
    cdf = 0.5 * (1.0 + tl.erf(u * INV_SQRT2))
    return u * cdf, cdf + u * tl.exp(-0.5 * u * u) * INV_SQRT_2PI


@triton.jit
def _key_bias(KB, b, offs_n, N, stride_kbb, HAS_KB: tl.constexpr):
    """(BN,) additive log2-domain bias of the keys offs_n: -inf beyond N, the key mask's bias within."""
    valid = offs_n < N
    if HAS_KB:
        bias = tl.load(KB + b * stride_kbb + offs_n, mask=valid, other=0.0) * LOG2E
        return tl.where(valid, bias, float("-inf"))
    return tl.where(valid, 0.0, float("-inf"))


@triton.jit
def _load_rows(X, offs_m, offs_d, N, stride_n):
    """(BM, D) tile of rows offs_m of a (N, D) slice (zeros beyond N). X already points at (b, h)."""
    return tl.load(X + offs_m[:, None] * stride_n + offs_d[None, :], mask=offs_m[:, None] < N, other=0.0)


@triton.jit
def _load_cols(X, offs_n, offs_d, N, stride_n):
    """(D, BN) transposed tile of rows offs_n of a (N, D) slice (zeros beyond N)."""
    return tl.load(X + offs_n[None, :] * stride_n + offs_d[:, None], mask=offs_n[None, :] < N, other=0.0)


@triton.jit
def _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC: tl.constexpr):
    """Normalised probabilities (BM, BN) of both softmaxes on one tile. lse = +inf on rows beyond N -> 0."""
    s_v = tl.dot(q, kT, input_precision=PREC) * scale_log2 + bias[None, :]
    s_a = tl.dot(qi, kT, input_precision=PREC) * scale_log2 + bias[None, :]
    return tl.exp2(s_v - lse_v[:, None]), tl.exp2(s_a - lse_a[:, None])


@triton.jit
def _query_tile(Q, QI, DO, LSE_V, LSE_A, D_V, D_A, b, h, H, offs_m, offs_d, N,
                sqb, sqh, sqn, sib, sih, sin, sdb, sdh, sdn):  # fmt: skip
    """What a backward kernel reads of one head's query tile: q, q_int, dO (BM, D); lse_v, lse_a, D_v, D_a (BM,)."""
    row = (b * H + h) * N + offs_m
    m_ok = offs_m < N
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, offs_d, N, sqn)
    qi = _load_rows(QI + b * sib + h * sih, offs_m, offs_d, N, sin)
    do = _load_rows(DO + b * sdb + h * sdh, offs_m, offs_d, N, sdn)
    lse_v = tl.load(LSE_V + row, mask=m_ok, other=float("inf"))
    lse_a = tl.load(LSE_A + row, mask=m_ok, other=float("inf"))
    d_v = tl.load(D_V + row, mask=m_ok, other=0.0)
    d_a = tl.load(D_A + row, mask=m_ok, other=0.0)
    return q, qi, do, lse_v, lse_a, d_v, d_a


@triton.jit
def _online_lse(m, total, s):
    """One step of the streaming log-sum-exp (log2 domain) over the tile s (BM, BN)."""
    m_new = tl.maximum(m, tl.max(s, 1))
    total_new = total * tl.exp2(m - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
    return m_new, total_new


@triton.jit
def _lse_kernel(
    Q, QI, K, KB, LSE_V, LSE_A,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, skbb,
    N, H, scale_log2,
    HAS_KB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Row log-sum-exps (log2 domain) of both softmaxes. Grid: (cdiv(N, BM), B * H). LSE_*: (B, H, N)."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, offs_d, N, sqn)
    qi = _load_rows(QI + b * sib + h * sih, offs_m, offs_d, N, sin)
    m_v = tl.full([BM], float("-inf"), tl.float32)
    m_a = tl.full([BM], float("-inf"), tl.float32)
    l_v = tl.zeros([BM], tl.float32)
    l_a = tl.zeros([BM], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        m_v, l_v = _online_lse(m_v, l_v, tl.dot(q, kT, input_precision=PREC) * scale_log2 + bias[None, :])
        m_a, l_a = _online_lse(m_a, l_a, tl.dot(qi, kT, input_precision=PREC) * scale_log2 + bias[None, :])
    row = (b * H + h) * N + offs_m
    tl.store(LSE_V + row, m_v + tl.log2(l_v), mask=offs_m < N)
    tl.store(LSE_A + row, m_a + tl.log2(l_a), mask=offs_m < N)
