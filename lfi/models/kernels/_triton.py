"""Triton kernels of interaction attention (paper Eq. 3-9), forward and backward, flash-attention style.

Nothing of size B x H x N x N ever reaches device memory: the probabilities of both softmaxes are recomputed
tile by tile from the saved row log-sum-exps, the gate runs on those tiles, and C_F V is accumulated on chip.

Notation (per batch element, head h, query i, key j; s = scale * q.k):
  P_v = softmax_j(s(q)), P_a = softmax_j(s(q_int)),
  gate (c runs over the 2H maps [P_a heads; P_v heads] for the head-mixing gate, over the 2 maps of one head
  for the per-head gate):  x_c = N P_c,  u = W1 x + b1,  z = gelu(u),  t = W2 z + b2,  g = sigmoid(t),
  C_F = g_a P_a + g_v P_v (g = 1/2 without a gate),  out = C_F V.
Backward (dO given): dC_F = dO V^T, dg_c = dC_F P_c, dt = dg g (1 - g), dz = W2^T dt, du = dz gelu'(u),
  dx = W1^T du, dP_c = dC_F g_c + N dx_c, dS_c = P_c (dP_c - D_c) with D_c = rowsum(P_c dP_c).
  D needs every key of a row before any dS can be formed, so the backward is two passes: row statistics
  (D), then the gradients.

Two kernel families:
  per-head ("ph": no gate, or the per-head gate): every head is independent, so a program owns one
      (batch, head, query tile) and keeps its output accumulator in registers, as in FlashAttention-2.
  head-mixing ("mix": the gate of Eq. 5 over all 2H maps): the gate at pair (i, j) needs the probabilities of
      all heads, so a program owns one (batch, query tile) and walks the heads twice per key tile: once to
      accumulate the gate's hidden layer, once to form C_F per head. The per-head accumulators (H x BM x d)
      do not fit in registers for H up to 16, so they live in a program-owned fp32 buffer (L2-resident).

Logits are kept in the log2 domain (scaled by log2(e)) so that exp2 can be used; lse buffers are internal.
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
def _gelu(u):
    return 0.5 * u * (1.0 + tl.erf(u * INV_SQRT2))


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


# ----------------------------------------------------------------------------------------------------------
# Per-head family: no gate (GATED=False, C_F = (P_a + P_v) / 2) or the per-head gate (GATED=True).
# Gate weights of the per-head gate: w1 (E, 2), b1 (E,), w2 (2, E), b2 (2,), column/row 0 = C_AGT, 1 = C_VFM.
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _ph_gate_weights(W1, B1, W2, B2, E: tl.constexpr, EP: tl.constexpr):
    """The per-head gate's weights as (EP,) vectors (zero-padded beyond E) and two scalars."""
    offs_e = tl.arange(0, EP)
    e_ok = offs_e < E
    w1a = tl.load(W1 + offs_e * 2, mask=e_ok, other=0.0).to(tl.float32)
    w1v = tl.load(W1 + offs_e * 2 + 1, mask=e_ok, other=0.0).to(tl.float32)
    b1 = tl.load(B1 + offs_e, mask=e_ok, other=0.0).to(tl.float32)
    w2a = tl.load(W2 + offs_e, mask=e_ok, other=0.0).to(tl.float32)
    w2v = tl.load(W2 + E + offs_e, mask=e_ok, other=0.0).to(tl.float32)
    b2a = tl.load(B2).to(tl.float32)
    b2v = tl.load(B2 + 1).to(tl.float32)
    return w1a, w1v, b1, w2a, w2v, b2a, b2v


@triton.jit
def _ph_hidden(p_a, p_v, w1a, w1v, b1, n_keys):
    """Pre-activation u (BM, BN, EP) of the per-head gate."""
    return (
        (p_a * n_keys)[:, :, None] * w1a[None, None, :]
        + (p_v * n_keys)[:, :, None] * w1v[None, None, :]
        + b1[None, None, :]
    )


@triton.jit
def _gate_out(z, w2c, b2c):
    """g_c (BM, BN) = sigmoid(w2[c] . z + b2[c]) from the hidden activations z (BM, BN, EP)."""
    return tl.sigmoid(tl.sum(z * w2c[None, None, :], 2) + b2c)


@triton.jit
def _ph_fwd_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1, B1, W2, B2, OUT,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sob, soh, son,
    N, H, scale_log2, n_keys,
    GATED: tl.constexpr, E: tl.constexpr, EP: tl.constexpr, HAS_KB: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """out = C_F V for one (batch, head, query tile). Grid: (cdiv(N, BM), B * H)."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, offs_d, N, sqn)
    qi = _load_rows(QI + b * sib + h * sih, offs_m, offs_d, N, sin)
    row = (b * H + h) * N + offs_m
    lse_v = tl.load(LSE_V + row, mask=offs_m < N, other=float("inf"))
    lse_a = tl.load(LSE_A + row, mask=offs_m < N, other=float("inf"))
    if GATED:
        w1a, w1v, b1, w2a, w2v, b2a, b2v = _ph_gate_weights(W1, B1, W2, B2, E, EP)
    acc = tl.zeros([BM, D], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        v = _load_rows(V + b * svb + h * svh, offs_n, offs_d, N, svn)
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        if GATED:
            z = _gelu(_ph_hidden(p_a, p_v, w1a, w1v, b1, n_keys))
            c = _gate_out(z, w2a, b2a) * p_a + _gate_out(z, w2v, b2v) * p_v
        else:
            c = 0.5 * (p_a + p_v)
        acc += tl.dot(c.to(v.dtype), v, input_precision=PREC)
    o_ptrs = OUT + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :]
    tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=offs_m[:, None] < N)


@triton.jit
def _ph_pair_grads(p_a, p_v, dcf, w1a, w1v, b1, w2a, w2v, b2a, b2v, n_keys, GATED: tl.constexpr):
    """Per-pair backward of the gate on one tile.

    Returns g_a, g_v, dP_a, dP_v (BM, BN) and, for the weight gradients, z, du (BM, BN, EP), dt_a, dt_v.
    Without a gate the extra outputs are placeholders the caller does not read.
    """
    if GATED:
        u = _ph_hidden(p_a, p_v, w1a, w1v, b1, n_keys)
        z, dz = _gelu_with_grad(u)
        g_a = _gate_out(z, w2a, b2a)
        g_v = _gate_out(z, w2v, b2v)
        dt_a = dcf * p_a * g_a * (1.0 - g_a)
        dt_v = dcf * p_v * g_v * (1.0 - g_v)
        du = (dt_a[:, :, None] * w2a[None, None, :] + dt_v[:, :, None] * w2v[None, None, :]) * dz
        dp_a = dcf * g_a + n_keys * tl.sum(du * w1a[None, None, :], 2)
        dp_v = dcf * g_v + n_keys * tl.sum(du * w1v[None, None, :], 2)
    else:  # one return statement: Triton wants the same return types on every path
        g_a = tl.full(p_a.shape, 0.5, tl.float32)
        g_v = g_a
        dp_a = 0.5 * dcf
        dp_v = dp_a
        z, du, dt_a, dt_v = p_a[:, :, None], p_a[:, :, None], p_a, p_a
    return g_a, g_v, dp_a, dp_v, z, du, dt_a, dt_v


@triton.jit
def _ph_bwd_rowstats_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1, B1, W2, B2, DO, D_V, D_A,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sdb, sdh, sdn,
    N, H, scale_log2, n_keys,
    GATED: tl.constexpr, E: tl.constexpr, EP: tl.constexpr, HAS_KB: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """D_c = rowsum(P_c dP_c) of both softmaxes. Grid: (cdiv(N, BM), B * H). D_*: (B, H, N) fp32."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, offs_d, N, sqn)
    qi = _load_rows(QI + b * sib + h * sih, offs_m, offs_d, N, sin)
    do = _load_rows(DO + b * sdb + h * sdh, offs_m, offs_d, N, sdn)
    row = (b * H + h) * N + offs_m
    lse_v = tl.load(LSE_V + row, mask=offs_m < N, other=float("inf"))
    lse_a = tl.load(LSE_A + row, mask=offs_m < N, other=float("inf"))
    w1a, w1v, b1, w2a, w2v, b2a, b2v = _ph_gate_weights(W1, B1, W2, B2, E, EP)
    acc_v = tl.zeros([BM], tl.float32)
    acc_a = tl.zeros([BM], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        vT = _load_cols(V + b * svb + h * svh, offs_n, offs_d, N, svn)
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        dcf = tl.dot(do, vT, input_precision=PREC)
        _, _, dp_a, dp_v, _, _, _, _ = _ph_pair_grads(
            p_a, p_v, dcf, w1a, w1v, b1, w2a, w2v, b2a, b2v, n_keys, GATED
        )
        acc_v += tl.sum(p_v * dp_v, 1)
        acc_a += tl.sum(p_a * dp_a, 1)
    tl.store(D_V + row, acc_v, mask=offs_m < N)
    tl.store(D_A + row, acc_a, mask=offs_m < N)


@triton.jit
def _ph_bwd_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1, B1, W2, B2, DO, D_V, D_A, DK, DV, DW,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sdb, sdh, sdn,
    sgb, sgh, sgn,
    N, H, scale_log2, scale, n_keys,
    GATED: tl.constexpr, E: tl.constexpr, EP: tl.constexpr, HAS_KB: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Gradients for one (batch, head, key tile), walking the query tiles. Grid: (cdiv(N, BN), B * H).

    dK, dV accumulate in registers, stored once (input dtype, (B, N, H, D) strides sgb, sgh, sgn); dQ comes
    from `_ph_dq_kernel`. The gate weights' gradients of this program go to its own row of DW
    (programs, 8 * EP), summed on the host.
    """
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
    kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
    vT = _load_cols(V + b * svb + h * svh, offs_n, offs_d, N, svn)
    w1a, w1v, b1, w2a, w2v, b2a, b2v = _ph_gate_weights(W1, B1, W2, B2, E, EP)
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    # gate weight gradients: dW1[:, a], dW1[:, v], db1, dW2[a, :], dW2[v, :] (EP,), db2 (scalars, summed rows)
    dw1a = tl.zeros([EP], tl.float32)
    dw1v = tl.zeros([EP], tl.float32)
    db1 = tl.zeros([EP], tl.float32)
    dw2a = tl.zeros([EP], tl.float32)
    dw2v = tl.zeros([EP], tl.float32)
    db2a = tl.zeros([BM], tl.float32)
    db2v = tl.zeros([BM], tl.float32)
    for m0 in range(0, N, BM):
        offs_m = m0 + tl.arange(0, BM)
        q, qi, do, lse_v, lse_a, d_v, d_a = _query_tile(Q, QI, DO, LSE_V, LSE_A, D_V, D_A, b, h, H, offs_m, offs_d,
            N, sqb, sqh, sqn, sib, sih, sin, sdb, sdh, sdn)  # fmt: skip
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        dcf = tl.dot(do, vT, input_precision=PREC)
        g_a, g_v, dp_a, dp_v, z, du, dt_a, dt_v = _ph_pair_grads(
            p_a, p_v, dcf, w1a, w1v, b1, w2a, w2v, b2a, b2v, n_keys, GATED
        )
        c = g_a * p_a + g_v * p_v
        dv += tl.dot(tl.trans(c).to(do.dtype), do, input_precision=PREC)
        ds_v = (p_v * (dp_v - d_v[:, None])).to(q.dtype)
        ds_a = (p_a * (dp_a - d_a[:, None])).to(q.dtype)
        dk += tl.dot(tl.trans(ds_v), q, input_precision=PREC) + tl.dot(
            tl.trans(ds_a), qi, input_precision=PREC
        )
        if GATED:
            dw2a += tl.sum(tl.sum(z * dt_a[:, :, None], 0), 0)
            dw2v += tl.sum(tl.sum(z * dt_v[:, :, None], 0), 0)
            db2a += tl.sum(dt_a, 1)
            db2v += tl.sum(dt_v, 1)
            dw1a += tl.sum(tl.sum(du * (p_a * n_keys)[:, :, None], 0), 0)
            dw1v += tl.sum(tl.sum(du * (p_v * n_keys)[:, :, None], 0), 0)
            db1 += tl.sum(tl.sum(du, 0), 0)
    kv_rows = b * sgb + h * sgh + offs_n[:, None] * sgn + offs_d[None, :]
    tl.store(DK + kv_rows, (dk * scale).to(DK.dtype.element_ty), mask=offs_n[:, None] < N)
    tl.store(DV + kv_rows, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < N)
    if GATED:
        offs_e = tl.arange(0, EP)
        w_row = DW + (pid_bh * tl.num_programs(0) + pid_n) * (8 * EP)
        tl.store(w_row + offs_e, dw1a)
        tl.store(w_row + EP + offs_e, dw1v)
        tl.store(w_row + 2 * EP + offs_e, db1)
        tl.store(w_row + 3 * EP + offs_e, dw2a)
        tl.store(w_row + 4 * EP + offs_e, dw2v)
        first = offs_e == 0
        tl.store(w_row + 5 * EP + offs_e, tl.where(first, tl.sum(db2a, 0), 0.0))
        tl.store(w_row + 6 * EP + offs_e, tl.where(first, tl.sum(db2v, 0), 0.0))


@triton.jit
def _ph_dq_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1, B1, W2, B2, DO, D_V, D_A, DQ, DQI,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sdb, sdh, sdn,
    sgb, sgh, sgn,
    N, H, scale_log2, scale, n_keys,
    GATED: tl.constexpr, E: tl.constexpr, EP: tl.constexpr, HAS_KB: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """dQ, dQ_int of one (batch, head, query tile), walking the key tiles. Grid: (cdiv(N, BM), B * H).

    A pass of its own rather than atomics from `_ph_bwd_kernel`: every row is written once (input dtype,
    (B, N, H, D) strides sgb, sgh, sgn).
    """
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q, qi, do, lse_v, lse_a, d_v, d_a = _query_tile(Q, QI, DO, LSE_V, LSE_A, D_V, D_A, b, h, H, offs_m, offs_d,
        N, sqb, sqh, sqn, sib, sih, sin, sdb, sdh, sdn)  # fmt: skip
    m_ok = offs_m < N
    w1a, w1v, b1, w2a, w2v, b2a, b2v = _ph_gate_weights(W1, B1, W2, B2, E, EP)
    dq = tl.zeros([BM, D], tl.float32)
    dqi = tl.zeros([BM, D], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        k = _load_rows(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        vT = _load_cols(V + b * svb + h * svh, offs_n, offs_d, N, svn)
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        dcf = tl.dot(do, vT, input_precision=PREC)
        _, _, dp_a, dp_v, _, _, _, _ = _ph_pair_grads(
            p_a, p_v, dcf, w1a, w1v, b1, w2a, w2v, b2a, b2v, n_keys, GATED
        )
        dq += tl.dot((p_v * (dp_v - d_v[:, None])).to(k.dtype), k, input_precision=PREC)
        dqi += tl.dot((p_a * (dp_a - d_a[:, None])).to(k.dtype), k, input_precision=PREC)
    ptrs = b * sgb + h * sgh + offs_m[:, None] * sgn + offs_d[None, :]
    tl.store(DQ + ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=m_ok[:, None])
    tl.store(DQI + ptrs, (dqi * scale).to(DQI.dtype.element_ty), mask=m_ok[:, None])
