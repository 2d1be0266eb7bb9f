"""Triton kernels of the head-mixing gate (paper Eq. 5 over all 2H maps), forward and backward.

The gate at a query-key pair (i, j) reads the probabilities of every head, so its kernels hold all heads of a
tile at once: (HP, BM, BN) tensors, HP the head count padded to a power of two (padded heads have zero queries,
lse = +inf, hence zero probabilities, and zero gate weights). The gate's FFN runs on the matrix units: the two
maps of every head are laid out as channels of the pairs, x (BM*BN, 2HP), channel 2h = C_AGT head h, 2h + 1 =
C_VFM head h, and the layers are two small matrix products, x W1t -> u (BM*BN, EP), gelu(u) W2t -> t.

The host hands the weights over in that channel order, zero-padded and with the key count folded into W1 (the
gate reads n_b P, n_b the keys batch element b attends, see `gate_values`): W1T (b, 2HP, EP) = n_b w1[:, perm]^T
(one copy per batch element under a key mask, batch stride sw1b; one shared copy, sw1b = 0, without), B1 (EP,),
W2T (EP, 2HP) = w2[perm]^T, B2 (2HP,), perm[2h + c] = c H + h. Hidden unit e sits in column ES e (`fused._mix_meta`): with ES = 2 the padded
units take the odd columns, and the even/odd split of a matrix-unit tile is free (each thread holds column pairs),
so GELU and its slope are evaluated on the real units only (padded units have u = 0, z = 0 and no weight out).

Forward (`_mix_fwd_kernel`): one program per (batch, query tile) walks the key tiles; output accumulators of all
heads stay in registers. Row log-sum-exps come from `_lse_kernel` beforehand (the gate needs normalised
probabilities, so the softmax cannot be online).

Backward, three kernels (notation of `_triton`):
  `_mix_gate_bwd_kernel`, one program per (batch, query tile), all heads: recomputes P, dC_F = dO V^T and the
      gate, and from them dt, du = dL/du and dP_c = dC_F g_c + n_b W1^T du; it sums the row statistics
      D_c = rowsum(P_c dP_c), the gate weights' gradients (matrix products over the pairs), and writes dP_c
      (B, 2H, N, N) and C_F (B, H, N, N) of each pair for the other two kernels.
  `_mix_dkdv_kernel`, one program per (batch, head, key tile) as in FlashAttention-2, and `_mix_dq_kernel`,
      one per (batch, head, query tile): each recomputes P, reads its head's dP_a, dP_v (and C_F for dV),
      forms dS_c = P_c (dP_c - D_c), and accumulates dK, dV (resp. dQ, dQ_int) in registers: every gradient
      row is written once, no atomics. Neither touches the gate nor recomputes dC_F = dO V^T: the gate kernel
      already has both (saving E hidden values per pair instead and rebuilding g and W1^T du per head cost
      2E loads, 4E multiply-adds, two sigmoids and the dO V^T product per pair and head in each kernel).
  dP and C_F are the only pairwise tensors: 3H values per pair, in the backward only, one layer at a time.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lfi.models.kernels._triton import (
    _gelu_with_grad,
    _key_bias,
    _load_cols,
    _load_rows,
    _probs,
    _query_tile,
)


@triton.jit
def _heads_rows(X, b, offs_h, offs_m, offs_d, N, H, sxb, sxh, sxn):
    """(HP, BM, D): rows offs_m of every head of batch element b; zeros on padded heads and rows."""
    ptrs = X + b * sxb + offs_h[:, None, None] * sxh + offs_m[None, :, None] * sxn + offs_d[None, None, :]
    ok = (offs_h[:, None, None] < H) & (offs_m[None, :, None] < N)
    return tl.load(ptrs, mask=ok, other=0.0)


@triton.jit
def _heads_cols(X, b, offs_h, offs_n, offs_d, N, H, sxb, sxh, sxn):
    """(HP, D, BN): the transposed rows offs_n of every head of batch element b."""
    ptrs = X + b * sxb + offs_h[:, None, None] * sxh + offs_n[None, None, :] * sxn + offs_d[None, :, None]
    ok = (offs_h[:, None, None] < H) & (offs_n[None, None, :] < N)
    return tl.load(ptrs, mask=ok, other=0.0)


@triton.jit
def _heads_stat(S, b, offs_h, offs_m, N, H, other):
    """(HP, BM) per-row statistics of every head from a (B, H, N) buffer; `other` on padded heads and rows."""
    ok = (offs_h[:, None] < H) & (offs_m[None, :] < N)
    return tl.load(S + (b * H + offs_h[:, None]) * N + offs_m[None, :], mask=ok, other=other)


@triton.jit
def _all_probs(q3, qi3, kT3, bias, lse_v, lse_a, scale_log2, PREC: tl.constexpr):
    """Probabilities (HP, BM, BN) of both softmaxes for every head of one tile."""
    s_v = tl.dot(q3, kT3, input_precision=PREC) * scale_log2 + bias[None, None, :]
    s_a = tl.dot(qi3, kT3, input_precision=PREC) * scale_log2 + bias[None, None, :]
    return tl.exp2(s_v - lse_v[:, :, None]), tl.exp2(s_a - lse_a[:, :, None])


@triton.jit
def _to_pairs(a, v, HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """Two (HP, BM, BN) maps -> (BM * BN, 2HP): channel 2h from `a` of head h, 2h + 1 from `v`."""
    return tl.reshape(tl.permute(tl.join(a, v), (1, 2, 0, 3)), (BM * BN, 2 * HP))


@triton.jit
def _head_sum(x, HP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """(BM * BN, 2HP) -> (HP, BM, BN): the sum of the two channels of each head."""
    return tl.permute(tl.sum(tl.reshape(x, (BM, BN, HP, 2)), 3), (2, 0, 1))


@triton.jit
def _gate_weights(W1T, B1, W2T, B2, HP: tl.constexpr, EP: tl.constexpr):
    """The host-prepared fp32 weights: w1t (2HP, EP), b1 (EP,), w2t (EP, 2HP), b2 (2HP,)."""
    offs_c = tl.arange(0, 2 * HP)
    offs_e = tl.arange(0, EP)
    w1t = tl.load(W1T + offs_c[:, None] * EP + offs_e[None, :])
    w2t = tl.load(W2T + offs_e[:, None] * (2 * HP) + offs_c[None, :])
    return w1t, tl.load(B1 + offs_e), w2t, tl.load(B2 + offs_c)


@triton.jit
def _gate(x, w1t, b1, w2t, b2, PREC: tl.constexpr, ES: tl.constexpr):
    """The FFN at every pair: x (P, 2HP) -> z = gelu(x w1t + b1) and dz = gelu'(.) (P, EP),
    g = sigmoid(z w2t + b2) (P, 2HP). The forward drops dz (the compiler removes its work).
    ES = 2: the real hidden units are the even columns; the odd ones get z = dz = 0 without any GELU."""
    u = tl.dot(x, w1t, input_precision=PREC) + b1[None, :]
    if ES == 2:
        u_real, _ = tl.split(tl.reshape(u, (u.shape[0], u.shape[1] // 2, 2)))
        z_real, dz_real = _gelu_with_grad(u_real)
        zero = tl.zeros_like(z_real)
        z = tl.reshape(tl.join(z_real, zero), u.shape)
        dz = tl.reshape(tl.join(dz_real, zero), u.shape)
    else:
        z, dz = _gelu_with_grad(u)
    return z, dz, tl.sigmoid(tl.dot(z, w2t, input_precision=PREC) + b2[None, :])


@triton.jit
def _mix_fwd_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1T, B1, W2T, B2, OUT,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sw1b, sob, soh, son,
    N, H, scale_log2,
    HAS_KB: tl.constexpr, HP: tl.constexpr, EP: tl.constexpr, ES: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """out = C_F V for one (batch, query tile), every head. Grid: (cdiv(N, BM), B). OUT: (B, N, H, D) strides."""
    pid_m, b = tl.program_id(0), tl.program_id(1)
    offs_h = tl.arange(0, HP)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q3 = _heads_rows(Q, b, offs_h, offs_m, offs_d, N, H, sqb, sqh, sqn)
    qi3 = _heads_rows(QI, b, offs_h, offs_m, offs_d, N, H, sib, sih, sin)
    lse_v = _heads_stat(LSE_V, b, offs_h, offs_m, N, H, float("inf"))
    lse_a = _heads_stat(LSE_A, b, offs_h, offs_m, N, H, float("inf"))
    w1t, b1, w2t, b2 = _gate_weights(W1T + b * sw1b, B1, W2T, B2, HP, EP)
    acc = tl.zeros([HP, BM, D], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        kT3 = _heads_cols(K, b, offs_h, offs_n, offs_d, N, H, skb, skh, skn)
        v3 = _heads_rows(V, b, offs_h, offs_n, offs_d, N, H, svb, svh, svn)
        p_v, p_a = _all_probs(q3, qi3, kT3, bias, lse_v, lse_a, scale_log2, PREC)
        x = _to_pairs(p_a, p_v, HP, BM, BN)
        _, _, g = _gate(x, w1t, b1, w2t, b2, PREC, ES)
        c = _head_sum(g * x, HP, BM, BN)
        acc += tl.dot(c.to(v3.dtype), v3, input_precision=PREC)
    ptrs = OUT + b * sob + offs_h[:, None, None] * soh + offs_m[None, :, None] * son + offs_d[None, None, :]
    ok = (offs_h[:, None, None] < H) & (offs_m[None, :, None] < N)
    tl.store(ptrs, acc.to(OUT.dtype.element_ty), mask=ok)


@triton.jit
def _mix_gate_bwd_kernel(
    Q, QI, K, V, KB, LSE_V, LSE_A, W1T, B1, W2T, B2, DO, D_V, D_A, DP, CF, DW,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, svb, svh, svn, skbb, sw1b, sdb, sdh, sdn,
    N, H, scale_log2,
    HAS_KB: tl.constexpr, HP: tl.constexpr, EP: tl.constexpr, ES: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """The gate's backward for one (batch, query tile), every head. Grid: (cdiv(N, BM), B).

    Writes D_V, D_A (B, H, N); DP (B, 2H, N, N) (channel 2h: dP_a of head h, 2h + 1: dP_v) and CF (B, H, N, N),
    both contiguous; and this program's row of DW
    (B, cdiv(N, BM), 2 * 2HP * EP + EP + 2HP): dw1t (2HP, EP) (the gradient of this batch element's W1T),
    dw2t (EP, 2HP), db1 (EP,), db2 (2HP,).
    """
    pid_m, b = tl.program_id(0), tl.program_id(1)
    offs_h = tl.arange(0, HP)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    offs_e = tl.arange(0, EP)
    offs_c = tl.arange(0, 2 * HP)
    offs_p = tl.arange(0, BM * BN)  # pair p = (query p // BN, key p % BN) of the tile
    q3 = _heads_rows(Q, b, offs_h, offs_m, offs_d, N, H, sqb, sqh, sqn)
    qi3 = _heads_rows(QI, b, offs_h, offs_m, offs_d, N, H, sib, sih, sin)
    do3 = _heads_rows(DO, b, offs_h, offs_m, offs_d, N, H, sdb, sdh, sdn)
    lse_v = _heads_stat(LSE_V, b, offs_h, offs_m, N, H, float("inf"))
    lse_a = _heads_stat(LSE_A, b, offs_h, offs_m, N, H, float("inf"))
    w1t, b1, w2t, b2 = _gate_weights(W1T + b * sw1b, B1, W2T, B2, HP, EP)
    w1, w2 = tl.trans(w1t), tl.trans(w2t)
    rowstat = tl.zeros([BM, 2 * HP], tl.float32)
    dw1t = tl.zeros([2 * HP, EP], tl.float32)
    dw2t = tl.zeros([EP, 2 * HP], tl.float32)
    db1 = tl.zeros([EP], tl.float32)
    db2 = tl.zeros([2 * HP], tl.float32)
    pair_m = pid_m * BM + offs_p // BN
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        kT3 = _heads_cols(K, b, offs_h, offs_n, offs_d, N, H, skb, skh, skn)
        vT3 = _heads_cols(V, b, offs_h, offs_n, offs_d, N, H, svb, svh, svn)
        p_v, p_a = _all_probs(q3, qi3, kT3, bias, lse_v, lse_a, scale_log2, PREC)
        dcf = tl.dot(do3, vT3, input_precision=PREC)
        x = _to_pairs(p_a, p_v, HP, BM, BN)
        z, dz, g = _gate(x, w1t, b1, w2t, b2, PREC, ES)
        dcf2 = _to_pairs(dcf, dcf, HP, BM, BN)
        dt = dcf2 * x * g * (1.0 - g)
        du = tl.dot(dt, w2, input_precision=PREC) * dz
        dp = dcf2 * g + tl.dot(du, w1, input_precision=PREC)
        rowstat += tl.sum(tl.reshape(x * dp, (BM, BN, 2 * HP)), 1)
        dw1t += tl.dot(tl.trans(x), du, input_precision=PREC)
        dw2t += tl.dot(tl.trans(z), dt, input_precision=PREC)
        db1 += tl.sum(du, 0)
        db2 += tl.sum(dt, 0)
        # what the dK/dV and dQ kernels need of each pair: dP of both maps and C_F (summed in-thread: a
        # matrix-unit tile gives each thread column pairs, i.e. both maps of a head)
        cf = tl.sum(tl.reshape(g * x, (BM * BN, HP, 2)), 2)
        pair = pair_m[:, None] * N + (n0 + offs_p % BN)[:, None]
        pair_ok = (pair_m[:, None] < N) & ((n0 + offs_p % BN)[:, None] < N)
        ok = pair_ok & (offs_c[None, :] < 2 * H)
        tl.store(DP + (b * 2 * H + offs_c[None, :]) * N * N + pair, dp.to(DP.dtype.element_ty), mask=ok)
        ok = pair_ok & (offs_h[None, :] < H)
        tl.store(CF + (b * H + offs_h[None, :]) * N * N + pair, cf.to(CF.dtype.element_ty), mask=ok)
    d_a, d_v = tl.split(tl.reshape(rowstat, (BM, HP, 2)))
    rows = (b * H + offs_h[None, :]) * N + offs_m[:, None]
    ok = (offs_h[None, :] < H) & (offs_m[:, None] < N)
    tl.store(D_A + rows, d_a, mask=ok)
    tl.store(D_V + rows, d_v, mask=ok)
    w_row = DW + (b * tl.num_programs(0) + pid_m) * (4 * HP * EP + EP + 2 * HP)
    tl.store(w_row + offs_c[:, None] * EP + offs_e[None, :], dw1t)
    tl.store(w_row + 2 * HP * EP + offs_e[:, None] * (2 * HP) + offs_c[None, :], dw2t)
    tl.store(w_row + 4 * HP * EP + offs_e, db1)
    tl.store(w_row + 4 * HP * EP + EP + offs_c, db2)


@triton.jit
def _head_scores_grads(DP, CF, b, h, H, offs_m, offs_n, N, p_a, p_v, d_a, d_v):
    """Head h's tile (BM, BN): dS_a, dS_v (fp32) and C_F, from the dP and C_F the gate kernel saved."""
    tile = offs_m[:, None] * N + offs_n[None, :]
    ok = (offs_m[:, None] < N) & (offs_n[None, :] < N)
    dp_a = tl.load(DP + (b * 2 * H + 2 * h) * N * N + tile, mask=ok, other=0.0).to(tl.float32)
    dp_v = tl.load(DP + (b * 2 * H + 2 * h + 1) * N * N + tile, mask=ok, other=0.0).to(tl.float32)
    cf = tl.load(CF + (b * H + h) * N * N + tile, mask=ok, other=0.0)
    return p_a * (dp_a - d_a[:, None]), p_v * (dp_v - d_v[:, None]), cf


@triton.jit
def _mix_dkdv_kernel(
    Q, QI, K, KB, LSE_V, LSE_A, DO, D_V, D_A, DP, CF, DK, DV,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, skbb, sdb, sdh, sdn, sgb, sgh, sgn,
    N, H, scale_log2, scale,
    HAS_KB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """dK, dV of one (batch, head, key tile), walking the query tiles. Grid: (cdiv(N, BN), B * H).

    DK, DV: input dtype, strides sgb, sgh, sgn.
    """
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
    kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    for m0 in range(0, N, BM):
        offs_m = m0 + tl.arange(0, BM)
        q, qi, do, lse_v, lse_a, d_v, d_a = _query_tile(Q, QI, DO, LSE_V, LSE_A, D_V, D_A, b, h, H, offs_m, offs_d,
            N, sqb, sqh, sqn, sib, sih, sin, sdb, sdh, sdn)  # fmt: skip
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        ds_a, ds_v, c = _head_scores_grads(DP, CF, b, h, H, offs_m, offs_n, N, p_a, p_v, d_a, d_v)
        dv += tl.dot(tl.trans(c.to(do.dtype)), do, input_precision=PREC)
        dk += tl.dot(tl.trans(ds_v.to(q.dtype)), q, input_precision=PREC)
        dk += tl.dot(tl.trans(ds_a.to(q.dtype)), qi, input_precision=PREC)
    ptrs = b * sgb + h * sgh + offs_n[:, None] * sgn + offs_d[None, :]
    k_ok = offs_n[:, None] < N
    tl.store(DK + ptrs, (dk * scale).to(DK.dtype.element_ty), mask=k_ok)
    tl.store(DV + ptrs, dv.to(DV.dtype.element_ty), mask=k_ok)


@triton.jit
def _mix_dq_kernel(
    Q, QI, K, KB, LSE_V, LSE_A, DO, D_V, D_A, DP, CF, DQ, DQI,
    sqb, sqh, sqn, sib, sih, sin, skb, skh, skn, skbb, sdb, sdh, sdn, sgb, sgh, sgn,
    N, H, scale_log2, scale,
    HAS_KB: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """dQ, dQ_int of one (batch, head, query tile), walking the key tiles. Grid: (cdiv(N, BM), B * H).

    A pass of its own (rather than atomics from `_mix_dkdv_kernel`): it recomputes the tile, but every dQ row
    is written once. DQ, DQI: input dtype, strides sgb, sgh, sgn.
    """
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q, qi, do, lse_v, lse_a, d_v, d_a = _query_tile(Q, QI, DO, LSE_V, LSE_A, D_V, D_A, b, h, H, offs_m, offs_d,
        N, sqb, sqh, sqn, sib, sih, sin, sdb, sdh, sdn)  # fmt: skip
    m_ok = offs_m < N
    dq = tl.zeros([BM, D], tl.float32)
    dqi = tl.zeros([BM, D], tl.float32)
    for n0 in range(0, N, BN):
        offs_n = n0 + tl.arange(0, BN)
        bias = _key_bias(KB, b, offs_n, N, skbb, HAS_KB)
        k = _load_rows(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        kT = _load_cols(K + b * skb + h * skh, offs_n, offs_d, N, skn)
        p_v, p_a = _probs(q, qi, kT, bias, lse_v, lse_a, scale_log2, PREC)
        ds_a, ds_v, _ = _head_scores_grads(DP, CF, b, h, H, offs_m, offs_n, N, p_a, p_v, d_a, d_v)
        dq += tl.dot(ds_v.to(k.dtype), k, input_precision=PREC)
        dqi += tl.dot(ds_a.to(k.dtype), k, input_precision=PREC)
    ptrs = b * sgb + h * sgh + offs_m[:, None] * sgn + offs_d[None, :]
    tl.store(DQ + ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=m_ok[:, None])
    tl.store(DQI + ptrs, (dqi * scale).to(DQI.dtype.element_ty), mask=m_ok[:, None])
