"""The math of interaction attention (Eq. 3-9) against an independent float64 reference."""

from __future__ import annotations

import pytest
import torch

from lfi.models.gate import GatedControl
from lfi.models.interaction_attention import GateWeights, MapRequest, gate_values, interaction_attention


def reference(q, k, v, scale, q_int, gate: GateWeights | None, mask=None):
    """Eq. 3-9 written out loop-free in float64, from the paper's text (with lfi's reading of Eq. 5: the gate
    reads the maps times the number of keys each row attends, see `gate_values`)."""
    q, k, v, q_int = (t.double() for t in (q, k, v, q_int))
    s_vfm, s_agt = q @ k.transpose(-1, -2) * scale, q_int @ k.transpose(-1, -2) * scale
    if mask is not None:
        s_vfm, s_agt = s_vfm.masked_fill(~mask, -torch.inf), s_agt.masked_fill(~mask, -torch.inf)
    c_vfm, c_agt = s_vfm.softmax(-1), s_agt.softmax(-1)
    if gate is None:
        g1 = g2 = torch.full_like(c_vfm, 0.5)
    else:
        heads, n = c_vfm.shape[1], c_vfm.shape[-1]
        if mask is not None:  # the keys each row attends, (B, 1, N, 1)
            n = mask.expand(*mask.shape[:-1], n).sum(-1, keepdim=True).double()
        x = (torch.cat([c_agt, c_vfm], 1) * n).permute(0, 2, 3, 1)  # (B, N, N, 2H): one FFN input per pair
        w1, b1, w2, b2 = (t.double() for t in gate)
        hidden = torch.nn.functional.gelu(x @ w1.T + b1)
        g = torch.sigmoid(hidden @ w2.T + b2).permute(0, 3, 1, 2)
        g1, g2 = g[:, :heads], g[:, heads:]
    c_f = g1 * c_agt + g2 * c_vfm
    return c_f @ v.double(), {"vfm": c_vfm, "agt": c_agt, "fused": c_f}


def random_gate(heads: int, hidden: int = 8) -> GateWeights:
    g = GatedControl(heads, hidden)
    torch.nn.init.normal_(g.fc2.weight, std=0.5)
    torch.nn.init.normal_(g.fc2.bias, std=0.5)
    return g.weights()


@pytest.mark.parametrize("heads,n,d", [(3, 17, 8), (6, 50, 16)])
@pytest.mark.parametrize("with_gate", [False, True])
def test_matches_float64_reference(heads, n, d, with_gate):
    q, k, v, q_int = torch.randn(4, 2, heads, n, d).unbind(0)
    gate = random_gate(heads) if with_gate else None
    out, maps = interaction_attention(
        q, k, v, d**-0.5, q_int=q_int, gate=gate, request=MapRequest.of("vfm", "agt", "fused")
    )
    ref_out, ref_maps = reference(q, k, v, d**-0.5, q_int, gate)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    for name in ("vfm", "agt", "fused"):
        torch.testing.assert_close(maps[name].double(), ref_maps[name], atol=1e-6, rtol=1e-4)


def _key_mask() -> torch.Tensor:
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., 7:] = False
    return mask


def _per_query_mask() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(2, 1, 9, 9, generator=generator) > 0.4) | torch.eye(9, dtype=torch.bool)


@pytest.mark.parametrize("request_", [None, MapRequest.of("vfm", "agt", "fused", rows=2)])
@pytest.mark.parametrize("make_mask", [_key_mask, _per_query_mask])
def test_ungated_layer_as_two_sdpa_calls_matches_the_reference(request_, make_mask):
    # no gate: C_F V = (C_AGT V + C_VFM V) / 2 runs as two SDPA calls, under a key mask and under a mask that
    # varies over queries; outputs, row maps and gradients agree
    q, k, v, q_int = (t.requires_grad_() for t in torch.randn(4, 2, 3, 9, 8).unbind(0))
    mask = make_mask()
    out, maps = interaction_attention(q, k, v, 0.4, q_int, request=request_, attn_mask=mask)
    ref_out, ref_maps = reference(q, k, v, 0.4, q_int, None, mask)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    for name in maps:
        torch.testing.assert_close(maps[name].double(), ref_maps[name][:, :, :2], atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(out.sum(), (q, k, v, q_int))
    ref_grads = torch.autograd.grad(ref_out.sum(), (q, k, v, q_int))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("names", [("agt",), ("vfm", "fused")])
def test_row_maps_under_a_per_query_mask_match_the_reference(names):
    # the row maps of both softmaxes come from one stacked product (attention_rows); a mask that differs per
    # query must follow each query set's rows, and only the requested maps come back, with their gradients
    q, k, v, q_int = (t.requires_grad_() for t in torch.randn(4, 2, 3, 9, 8).unbind(0))
    mask = _per_query_mask()
    out, maps = interaction_attention(
        q, k, v, 0.4, q_int, request=MapRequest.of(*names, rows=3), attn_mask=mask
    )
    ref_out, ref_maps = reference(q, k, v, 0.4, q_int, None, mask)
    assert set(maps) == set(names)
    weights = torch.rand(2, 3, 3, 9, generator=torch.Generator().manual_seed(1))
    loss = out.sum() + sum((maps[n] * weights).sum() for n in names)
    ref_loss = ref_out.sum() + sum((ref_maps[n][:, :, :3] * weights.double()).sum() for n in names)
    for name in names:
        torch.testing.assert_close(maps[name].double(), ref_maps[name][:, :, :3], atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(loss, (q, k, v, q_int))
    for g, r in zip(grads, torch.autograd.grad(ref_loss, (q, k, v, q_int)), strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_gradients_match_finite_differences():
    q, k, v, q_int = (t.double().requires_grad_() for t in torch.randn(4, 1, 2, 5, 3).unbind(0))
    w = [t.detach().double().requires_grad_() for t in random_gate(2, 4)]

    def f(q, k, v, q_int, *gate):
        out, maps = interaction_attention(
            q, k, v, 0.5, q_int=q_int, gate=GateWeights(*gate), request=MapRequest.of("agt", rows=1)
        )
        return out, maps["agt"]

    assert torch.autograd.gradcheck(f, (q, k, v, q_int, *w))


def test_fresh_gate_gives_halves_and_copy_gives_original_attention():
    q, k, v = torch.randn(3, 2, 4, 9, 8).unbind(0)
    gate = GatedControl(4).weights()
    out, maps = interaction_attention(
        q, k, v, 8**-0.5, q_int=q.clone(), gate=gate, request=MapRequest.of("fused")
    )
    plain, _ = interaction_attention(q, k, v, 8**-0.5)
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps["fused"], (q @ k.transpose(-1, -2) * 8**-0.5).softmax(-1))


def test_rows_are_the_first_rows_of_the_full_maps():
    q, k, v, q_int = torch.randn(4, 2, 3, 11, 8).unbind(0)
    gate = random_gate(3)
    _, full = interaction_attention(q, k, v, 0.3, q_int, gate, MapRequest.of("vfm", "agt", "fused"))
    _, rows = interaction_attention(q, k, v, 0.3, q_int, gate, MapRequest.of("vfm", "agt", "fused", rows=2))
    for name in full:
        torch.testing.assert_close(rows[name], full[name][:, :, :2])
    _, plain_full = interaction_attention(q, k, v, 0.3, request=MapRequest.of("vfm"))
    _, plain_rows = interaction_attention(q, k, v, 0.3, request=MapRequest.of("vfm", rows=1))
    torch.testing.assert_close(plain_rows["vfm"], plain_full["vfm"][:, :, :1])


def test_only_requested_maps_come_back():
    q, k, v, q_int = torch.randn(4, 1, 2, 6, 4).unbind(0)
    assert interaction_attention(q, k, v, 0.5, q_int)[1] == {}
    assert set(interaction_attention(q, k, v, 0.5, q_int, request=MapRequest.of("agt"))[1]) == {"agt"}


def test_key_padding_mask_gets_no_attention():
    q, k, v, q_int = torch.randn(4, 2, 3, 7, 4).unbind(0)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False  # the second image's last two tokens are padding
    gate = random_gate(3)
    out, maps = interaction_attention(q, k, v, 0.5, q_int, gate, MapRequest.of("vfm", "agt", "fused"), mask)
    ref_out, _ = reference(q, k, v, 0.5, q_int, gate, mask)
    for name in ("vfm", "agt", "fused"):
        assert maps[name][1, ..., 5:].abs().max() == 0
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    plain, _ = interaction_attention(q, k, v, 0.5, attn_mask=mask, request=MapRequest.of("vfm", rows=1))
    explicit, _ = interaction_attention(q, k, v, 0.5, attn_mask=mask, request=MapRequest.of("vfm"))
    torch.testing.assert_close(plain, explicit, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rows", [None, 2])
def test_padded_keys_change_nothing_for_the_real_ones(rows):
    # the gate reads each row's real key count: padding an input with masked keys (DETR batches images of
    # several sizes) leaves the real queries' outputs and maps as they were, whatever the padding holds
    q, k, v, q_int = torch.randn(4, 1, 3, 7, 8).unbind(0)
    gate = random_gate(3)
    request = MapRequest.of("vfm", "agt", "fused", rows=rows)
    out, maps = interaction_attention(q, k, v, 0.5, q_int, gate, request)
    padded = [torch.cat([t, 10 * torch.randn(1, 3, 4, 8)], dim=2) for t in (q, k, v, q_int)]
    mask = torch.ones(1, 1, 1, 11, dtype=torch.bool)
    mask[..., 7:] = False
    for m in (mask, torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))):  # bool and additive
        out_p, maps_p = interaction_attention(*padded[:3], 0.5, padded[3], gate, request, m)
        torch.testing.assert_close(out_p[:, :, :7], out, atol=1e-6, rtol=1e-5)
        for name in maps:
            torch.testing.assert_close(maps_p[name][:, :, : rows or 7, :7], maps[name][:, :, : rows or 7])


def test_gate_reads_the_maps_times_the_key_count():
    # a uniform row reads 1 at the FFN's input whatever N; with the default count and an explicit one alike
    gate = random_gate(2)
    for n in (5, 40):
        uniform = torch.full((1, 2, 3, n), 1 / n)
        g1, g2 = gate_values(uniform, uniform, gate)
        ones = torch.ones(1, 2, 1, 1)
        h1, h2 = gate_values(ones, ones, gate, keys=1)
        torch.testing.assert_close(g1, h1.expand_as(g1))
        torch.testing.assert_close(g2, h2.expand_as(g2))
        c1, _ = gate_values(uniform, uniform, gate, keys=torch.full((1, 1, 3, 1), float(n)))
        torch.testing.assert_close(c1, g1)


def test_bad_requests_are_refused():
    q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
    with pytest.raises(ValueError, match="unknown map"):
        MapRequest.of("cvfm")
    with pytest.raises(ValueError, match="need interaction queries"):
        interaction_attention(q, k, v, 0.5, request=MapRequest.of("agt"))
    with pytest.raises(ValueError, match="gated control network needs interaction queries"):
        interaction_attention(q, k, v, 0.5, gate=GatedControl(2).weights())
