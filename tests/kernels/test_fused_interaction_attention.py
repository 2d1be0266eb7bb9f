"""The fused interaction attention: which calls the kernels take (CPU), the kernels under the Triton
interpreter (CPU, in a subprocess), and accuracy against a float64 reference on the GPU. Which backend a layer
runs is tested in tests/models/test_backends.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fused_cases import Case, compare, make_inputs

from lfi.models.backends import ATTENTION
from lfi.models.interaction_attention import GateWeights, MapRequest, interaction_attention
from lfi.models.kernels import fused as fused_module
from lfi.models.kernels import fused_interaction_attention, fused_unsupported_reason

HERE = Path(__file__).resolve().parent
HAS_TRITON = fused_module._kernels is not None


def _qkv(B=2, H=3, N=10, d=32, device="cpu"):
    return [torch.randn(B, H, N, d, device=device) for _ in range(4)]


# ------------------------------------------------------------------------------------------------ dispatch


def test_cpu_tensors_and_layers_without_gate_are_not_for_the_kernels():
    q, k, v, qi = _qkv()
    gate = GateWeights(torch.zeros(8, 6), torch.zeros(8), torch.zeros(6, 8), torch.zeros(6))
    assert fused_unsupported_reason(q, k, v, 0.2, qi, gate) is not None  # the CPU: Triton or CUDA missing
    assert fused_unsupported_reason(q, k, v, 0.2) is not None
    if HAS_TRITON:
        assert "CUDA" in fused_unsupported_reason(q, k, v, 0.2, qi, gate)
        assert "no interaction queries" in fused_unsupported_reason(q, k, v, 0.2)
        assert "no gate" in fused_unsupported_reason(q, k, v, 0.2, q_int=qi, dispatch=False)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"dropout_p": 0.1}, "dropout"),
        ({"attn_mask": torch.ones(2, 1, 10, 10, dtype=torch.bool)}, "key masks"),
        ({"attn_mask": torch.ones(2, 3, 1, 10, dtype=torch.bool)}, "key masks"),
        (
            {"gate": GateWeights(torch.zeros(8, 5), torch.zeros(8), torch.zeros(5, 8), torch.zeros(5))},
            "expected",
        ),
        # the per-head gate (w1 (E, 2)) of earlier versions: the kernels take the head-mixing gate only
        (
            {"gate": GateWeights(torch.zeros(8, 2), torch.zeros(8), torch.zeros(2, 8), torch.zeros(2))},
            "expected",
        ),
    ],
)
def test_unsupported_cases_are_refused_with_a_reason(kwargs, why):
    q, k, v, qi = _qkv()
    kwargs = {
        "gate": GateWeights(torch.zeros(8, 6), torch.zeros(8), torch.zeros(6, 8), torch.zeros(6)),
        **kwargs,
    }
    reason = fused_unsupported_reason(q, k, v, 0.2, q_int=qi, **kwargs, dispatch=False)
    assert reason is not None and why in reason


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_supported_shapes_pass_the_capability_check():
    q, k, v, qi = _qkv(d=64)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)  # a key padding mask
    gate = GateWeights(torch.zeros(8, 6), torch.zeros(8), torch.zeros(6, 8), torch.zeros(6))
    assert (
        fused_unsupported_reason(q, k, v, 0.2, qi, gate, MapRequest.of("agt", rows=1), mask, dispatch=False)
        is None
    )
    q, k, v, qi = _qkv(d=48)
    assert "head_dim" in fused_unsupported_reason(q, k, v, 0.2, qi, gate, dispatch=False)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_float32_mixing_gate_beyond_eight_heads_is_refused():
    """fp32 tiles of 16 (padded) heads overflow sm_90's shared memory; bf16 takes them, fp32 <= 8 heads too."""
    q, k, v, qi = (torch.randn(1, 12, 10, 32) for _ in range(4))
    gate = GateWeights(torch.zeros(8, 24), torch.zeros(8), torch.zeros(24, 8), torch.zeros(24))
    assert "shared memory" in fused_unsupported_reason(q, k, v, 0.2, qi, gate, dispatch=False)
    low = [t.bfloat16() for t in (q, k, v, qi)]
    assert fused_unsupported_reason(*low[:3], 0.2, low[3], gate, dispatch=False) is None
    q8, k8, v8, qi8 = (t[:, :8] for t in (q, k, v, qi))
    gate8 = GateWeights(torch.zeros(8, 16), torch.zeros(8), torch.zeros(16, 8), torch.zeros(16))
    assert fused_unsupported_reason(q8, k8, v8, 0.2, qi8, gate8, dispatch=False) is None


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_mixing_gate_activations_beyond_32_bit_offsets_are_refused():
    """The backward saves dP of both maps per pair, B x 2H x N x N values indexed with 32-bit offsets: a batch
    that would overflow them is refused (the reference path takes it), one just below is not. Meta tensors."""
    gate = GateWeights(torch.zeros(8, 16), torch.zeros(8), torch.zeros(16, 8), torch.zeros(16))

    def reason(batch: int) -> str | None:
        q, k, v, qi = (torch.empty(batch, 8, 4000, 32, device="meta", dtype=torch.bfloat16) for _ in range(4))
        return fused_unsupported_reason(q, k, v, 0.2, qi, gate, dispatch=False)

    assert reason(8) is None  # 8 x 16 x 4000^2 = 2.05e9 < 2^31
    assert "32-bit" in reason(9)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_full_maps_are_computable_but_not_dispatched():
    q, k, v, qi = _qkv()
    gate = GateWeights(torch.zeros(8, 6), torch.zeros(8), torch.zeros(6, 8), torch.zeros(6))
    full = MapRequest.of("agt")
    assert fused_unsupported_reason(q, k, v, 0.2, qi, gate, full, dispatch=False) is None
    assert "full maps" in fused_unsupported_reason(q, k, v, 0.2, qi, gate, full)


def test_key_mask_becomes_an_additive_bias():
    m = torch.tensor([[True, False, True]])
    bias = fused_module._key_mask_bias(m[:, None, None, :], 1, 3)
    assert bias.shape == (1, 3) and bias[0, 0] == 0 and bias[0, 1] == float("-inf")
    add = torch.tensor([0.5, -1.0, 0.0])
    assert torch.equal(fused_module._key_mask_bias(add, 4, 3), add[None])


def test_fused_entry_point_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    if not HAS_TRITON:
        pytest.skip("needs triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, qi = _qkv()
    gate = GateWeights(torch.zeros(8, 6), torch.zeros(8), torch.zeros(6, 8), torch.zeros(6))
    with pytest.raises(ValueError, match="CUDA"):
        fused_interaction_attention(q, k, v, 0.2, qi, gate)


def test_gate_weights_keep_full_precision_when_each_key_count_is_folded_in():
    # N w1 rounded to bf16 put the weight gradients ~1e-2 off on the GPU: the packing must scale in fp32; each
    # batch element gets W1 times its own key count (padding), and the gradients sum back over them
    heads, hidden, keys = 6, 8, torch.tensor([197.0, 150.0])
    w1 = torch.randn(hidden, 2 * heads).bfloat16()
    b1, w2, b2 = (
        torch.randn(hidden).bfloat16(),
        torch.randn(2 * heads, hidden).bfloat16(),
        torch.randn(2 * heads),
    )
    w1t, b1p, w2t, b2p = fused_module._mix_weights(w1, b1, w2, b2, heads, keys)
    perm = fused_module._mix_channels(heads, w1.device)
    assert w1t.dtype == torch.float32 and w1t.shape == (2, 16, 16)
    # 8 hidden units in 16 columns: the real units take the even columns, so the kernels skip GELU on the odd
    assert fused_module._mix_meta(heads, hidden)[2] == 2
    for b in range(2):
        assert torch.equal(w1t[b, : 2 * heads, ::2], w1.float().t()[perm] * keys[b])
    assert not w1t[:, 2 * heads :].any() and not w1t[:, :, 1::2].any()
    assert not b1p[1::2].any() and not w2t[1::2].any()

    # the packed layout read back through the gradient unpacking gives the weights in the model's layout:
    # DW rows (B, programs, width), each batch element's dW1T counted n_b times
    unit = torch.cat([w1t[0].flatten() / keys[0], w2t.flatten(), b1p, b2p])
    dw = torch.stack([unit, unit]).expand(2, 2, -1) / 4
    dw1, db1, dw2, db2 = fused_module._mix_weight_grads(dw, heads, hidden, keys)
    torch.testing.assert_close(dw1, w1.float() * keys.mean())
    torch.testing.assert_close(db1, b1.float())
    torch.testing.assert_close(dw2, w2.float())
    torch.testing.assert_close(db2, b2)


# -------------------------------------------------------------------------------------- interpreter (CPU)


def _interpret(arg: str | None) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, str(HERE / "interpret_check.py")] + ([arg] if arg else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_within(report: dict, tol: float) -> None:
    bad = {case: {k: e for k, e in errs.items() if not e <= tol} for case, errs in report.items()}
    assert not any(bad.values()), bad


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_kernels_under_the_interpreter_quick():
    """One tiny head-mixing case, forward + every gradient, fp32 vs float64 (about 10 s)."""
    _assert_within(_interpret("quick"), 1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_kernels_under_the_interpreter_all_variants():
    """Key masks of different counts per batch element, d = 32 and 64, E = 5 and 12, full maps (about 70 s)."""
    _assert_within(_interpret(None), 1e-4)


# ------------------------------------------------------------------------------------------------------- GPU

GPU_CASES = [
    Case(2, 3, 197, 64),  # ViT-Ti
    Case(2, 6, 197, 64),  # ViT-S
    Case(2, 12, 50, 64),  # ViT-B/32
    Case(1, 16, 197, 64),  # ViT-L
    Case(1, 8, 1000, 32, key_mask=True),  # DETR-like encoder
    Case(2, 8, 300, 32, key_mask=True),  # a padded DETR batch: each image's gate reads its own key count
    Case(2, 8, 333, 64),  # 8 heads (the most fp32 takes), tokens not a tile multiple
    Case(2, 6, 197, 64, hidden=12),  # hidden units fill EP = 16 (no even/odd split)
]
TOL = {torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float32: 1e-4}


# fp32 takes at most MAX_MIX_HEADS_FP32 heads (see the refusal test above)
GPU_RUNS = [
    pytest.param(case, dtype, id=f"{case.name}-{name}")
    for case in GPU_CASES
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32"))
    if not (dtype == torch.float32 and case.heads > fused_module.MAX_MIX_HEADS_FP32)
]


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "dtype"), GPU_RUNS)
def test_fused_matches_float64_reference_on_gpu(case, dtype):
    errs = compare(fused_interaction_attention, make_inputs(case, dtype, "cuda"))
    bad = {k: e for k, e in errs.items() if not e <= TOL[dtype]}
    assert not bad, f"{case.name} {dtype}: {bad} (all: {errs})"


@pytest.mark.gpu
def test_fused_fp16_on_gpu():
    errs = compare(fused_interaction_attention, make_inputs(Case(2, 6, 197, 64), torch.float16, "cuda"))
    assert all(e <= TOL[torch.float16] for e in errs.values()), errs


@pytest.mark.gpu
def test_auto_picks_the_kernels_on_gpu(monkeypatch):
    q, k, v, qi = _qkv(N=197, d=64, device="cuda")
    gate = GateWeights(*(0.1 * torch.randn(s, device="cuda") for s in ((8, 6), (8,), (6, 8), (6,))))
    assert fused_unsupported_reason(q, k, v, 0.125, qi, gate) is None
    assert "no gate" in fused_unsupported_reason(q, k, v, 0.125, q_int=qi)  # two SDPA calls do that
    calls = []
    monkeypatch.setattr(
        fused_module, "_forward", lambda *a, _f=fused_module._forward: calls.append(1) or _f(*a)
    )
    out, _ = ATTENTION["auto"](q, k, v, 0.125, q_int=qi, gate=gate)
    assert calls  # the kernels ran
    ref, _ = interaction_attention(q, k, v, 0.125, q_int=qi, gate=gate)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_ivit_step_fused_matches_reference_on_gpu():
    """A whole I-ViT-S/16 forward_aligned + backward under bf16 autocast: fused vs reference backend."""
    timm = pytest.importorskip("timm")
    from lfi.models.ivit import interactionize

    torch.manual_seed(0)
    model = interactionize(
        timm.create_model("vit_small_patch16_224", pretrained=False), freeze_backbone=False
    )
    model = model.cuda()
    for layer in model.interaction_layers().values():  # non-trivial gates
        torch.nn.init.normal_(layer.control.fc2.weight, std=0.5)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    results = {}
    for backend in ("reference", "fused"):
        for layer in model.interaction_layers().values():
            layer.backend = backend
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, maps = model.forward_aligned(x)
            loss = logits.float().square().mean() + sum(m.float().square().sum() for m in maps.values())
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results[backend] = (logits.detach().float(), grads)
    (ref_logits, ref_grads), (fused_logits, fused_grads) = results["reference"], results["fused"]
    assert (fused_logits - ref_logits).norm() / ref_logits.norm() < 3e-2
    for name in (
        "vit.blocks.11.attn.iq.weight",
        "vit.blocks.11.attn.control.fc1.weight",
        "vit.blocks.0.attn.qkv.weight",
    ):
        a, b = fused_grads[name].float(), ref_grads[name].float()
        assert (a - b).norm() / b.norm() < 5e-2, name
