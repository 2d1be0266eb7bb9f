"""The fused interaction attention: dispatch rules (CPU), kernels under the Triton interpreter (CPU, in a
subprocess), and accuracy against a float64 reference on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fused_cases import Case, compare, make_inputs

from lfi.models.interaction_attention import GateWeights, MapRequest, gate_values, interaction_attention
from lfi.models.kernels import (
    attention_backend,
    can_use_fused,
    fused_interaction_attention,
    fused_unsupported_reason,
    per_head_gate_values,
    should_use_fused,
    use_backend,
)
from lfi.models.kernels import fused as fused_module

HERE = Path(__file__).resolve().parent
HAS_TRITON = fused_module._kernels is not None


def _qkv(B=2, H=3, N=10, d=32, device="cpu"):
    return [torch.randn(B, H, N, d, device=device) for _ in range(4)]


# ------------------------------------------------------------------------------------------------ dispatch


def test_cpu_keeps_the_reference_path():
    q, k, v, qi = _qkv()
    assert not can_use_fused(q, k, v, 0.2, q_int=qi)
    assert not should_use_fused(q, k, v, 0.2, q_int=qi)
    with use_backend("fused"), pytest.raises(RuntimeError, match="cannot run"):
        should_use_fused(q, k, v, 0.2, q_int=qi)


def test_plain_attention_never_dispatches_to_the_kernels():
    q, k, v, _ = _qkv()
    assert "no interaction queries" in fused_unsupported_reason(q, k, v, 0.2)
    with use_backend("fused"):  # plain attention is SDPA already: no error, just the reference
        assert not should_use_fused(q, k, v, 0.2)


def test_auto_leaves_layers_to_torch_compile(monkeypatch):
    q, k, v, qi = _qkv()
    gate = GateWeights(torch.randn(4, 6), torch.randn(4), torch.randn(6, 4), torch.randn(6))
    monkeypatch.setattr(fused_module, "fused_unsupported_reason", lambda *args, **kwargs: None)  # as on a GPU
    assert should_use_fused(q, k, v, 0.2, qi, gate)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not should_use_fused(q, k, v, 0.2, qi, gate)
    with use_backend("fused"):  # an explicit choice holds
        assert should_use_fused(q, k, v, 0.2, qi, gate)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("LFI_ATTENTION", raising=False)
    assert attention_backend() == "auto"  # the kernels where they apply, the reference elsewhere
    monkeypatch.setenv("LFI_ATTENTION", "reference")
    assert attention_backend() == "reference"
    with use_backend("fused"):
        assert attention_backend() == "fused"
        with use_backend("auto"):
            assert attention_backend() == "auto"
        assert attention_backend() == "fused"
    assert attention_backend() == "reference"
    monkeypatch.setenv("LFI_ATTENTION", "fast")
    with pytest.raises(ValueError, match="LFI_ATTENTION"):
        attention_backend()
    with pytest.raises(ValueError, match="backend"), use_backend("fast"):
        pass


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"dropout_p": 0.1}, "dropout"),
        ({"attn_mask": torch.ones(2, 1, 10, 10, dtype=torch.bool)}, "key masks"),
        ({"attn_mask": torch.ones(2, 3, 1, 10, dtype=torch.bool)}, "key masks"),
        ({"gate": GateWeights(torch.zeros(8, 5), torch.zeros(8), torch.zeros(5, 8), torch.zeros(5))}, "fit"),
    ],
)
def test_unsupported_cases_are_refused_with_a_reason(kwargs, why):
    q, k, v, qi = _qkv()
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
    assert "head_dim" in fused_unsupported_reason(q, k, v, 0.2, q_int=qi, dispatch=False)


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
    """The backward saves B x E x N x N gate activations, indexed with 32-bit offsets: a batch that would
    overflow them is refused (the reference path takes it), one just below is not. Meta tensors: no memory."""
    gate = GateWeights(torch.zeros(8, 16), torch.zeros(8), torch.zeros(16, 8), torch.zeros(16))

    def reason(batch: int) -> str | None:
        q, k, v, qi = (torch.empty(batch, 8, 4000, 32, device="meta", dtype=torch.bfloat16) for _ in range(4))
        return fused_unsupported_reason(q, k, v, 0.2, qi, gate, dispatch=False)

    assert reason(16) is None  # 16 x 8 x 4000^2 = 2.05e9 < 2^31
    assert "32-bit" in reason(17)


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
    with pytest.raises(ValueError, match="CUDA"):
        fused_interaction_attention(q, k, v, 0.2, q_int=qi)


def test_per_head_gate_equals_the_mixing_gate_with_one_head():
    c_agt, c_vfm = torch.rand(2, 1, 4, 6), torch.rand(2, 1, 4, 6)
    gate = GateWeights(torch.randn(8, 2), torch.randn(8), torch.randn(2, 8), torch.randn(2))
    for a, b in zip(per_head_gate_values(c_agt, c_vfm, gate), gate_values(c_agt, c_vfm, gate), strict=True):
        torch.testing.assert_close(a, b)


def test_per_head_gate_acts_on_each_head_alone():
    c_agt, c_vfm = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    gate = GateWeights(torch.randn(8, 2), torch.randn(8), torch.randn(2, 8), torch.randn(2))
    g1, _ = per_head_gate_values(c_agt, c_vfm, gate)
    c_agt2 = c_agt.clone()
    c_agt2[:, 1] += 0.3
    g1b, _ = per_head_gate_values(c_agt2, c_vfm, gate)
    torch.testing.assert_close(g1[:, [0, 2]], g1b[:, [0, 2]])
    assert not torch.allclose(g1[:, 1], g1b[:, 1])


def test_mixing_gate_weights_keep_full_precision_when_the_key_count_is_folded_in():
    # N w1 rounded to bf16 put the weight gradients ~1e-2 off on the GPU: the packing must scale in fp32
    heads, hidden, keys = 6, 8, 197
    w1 = torch.randn(hidden, 2 * heads).bfloat16()
    b1, w2, b2 = (
        torch.randn(hidden).bfloat16(),
        torch.randn(2 * heads, hidden).bfloat16(),
        torch.randn(2 * heads),
    )
    w1t, b1p, w2t, b2p = fused_module._mix_weights(w1, b1, w2, b2, heads, keys)
    perm = fused_module._mix_channels(heads, w1.device)
    assert w1t.dtype == torch.float32 and w1t.shape == (16, 16)
    # 8 hidden units in 16 columns: the real units take the even columns, so the kernels skip GELU on the odd
    assert fused_module._mix_meta(heads, hidden)[2] == 2
    assert torch.equal(w1t[: 2 * heads, ::2], w1.float().t()[perm] * keys)
    assert not w1t[2 * heads :].any() and not w1t[:, 1::2].any()
    assert not b1p[1::2].any() and not w2t[1::2].any()

    # the packed layout read back through the gradient unpacking gives the weights in the model's layout
    packed = torch.cat([w1t.flatten(), w2t.flatten(), b1p, b2p])
    dw1, db1, dw2, db2 = fused_module._mix_weight_grads(
        torch.stack([packed, packed]) / 2, heads, hidden, keys
    )
    torch.testing.assert_close(dw1, w1.float() * keys**2)
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
    """No gate / per-head / head-mixing gate, key masks, d = 32 and 64, E = 5 and 12, full maps (about 70 s)."""
    _assert_within(_interpret(None), 1e-4)


# ------------------------------------------------------------------------------------------------------- GPU

GPU_CASES = [
    Case(2, 3, 197, 64, "mix"),  # ViT-Ti
    Case(2, 6, 197, 64, "mix"),  # ViT-S
    Case(2, 12, 50, 64, "mix"),  # ViT-B/32
    Case(1, 16, 197, 64, "mix"),  # ViT-L
    Case(1, 8, 1000, 32, "mix", key_mask=True),  # DETR-like encoder
    Case(2, 8, 333, 64, "mix"),  # 8 heads (the most fp32 takes with this gate), tokens not a tile multiple
    Case(2, 6, 197, 64, "mix", hidden=12),  # hidden units fill EP = 16 (no even/odd split)
    Case(2, 6, 197, 64, "none", rows=0),
    Case(2, 6, 197, 64, "per_head"),
    Case(1, 12, 77, 32, "per_head", key_mask=True),
]
TOL = {torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float32: 1e-4}


# fp32 with the head-mixing gate takes at most MAX_MIX_HEADS_FP32 heads (see the refusal test above)
GPU_RUNS = [
    pytest.param(case, dtype, id=f"{case.name}-{name}")
    for case in GPU_CASES
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32"))
    if not (dtype == torch.float32 and case.gate == "mix" and case.heads > fused_module.MAX_MIX_HEADS_FP32)
]


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "dtype"), GPU_RUNS)
def test_fused_matches_float64_reference_on_gpu(case, dtype):
    errs = compare(fused_interaction_attention, make_inputs(case, dtype, "cuda"))
    bad = {k: e for k, e in errs.items() if not e <= TOL[dtype]}
    assert not bad, f"{case.name} {dtype}: {bad} (all: {errs})"


@pytest.mark.gpu
def test_fused_fp16_on_gpu():
    errs = compare(
        fused_interaction_attention, make_inputs(Case(2, 6, 197, 64, "mix"), torch.float16, "cuda")
    )
    assert all(e <= TOL[torch.float16] for e in errs.values()), errs


@pytest.mark.gpu
def test_dispatch_picks_the_kernels_on_gpu():
    q, k, v, qi = _qkv(N=197, d=64, device="cuda")
    gate = GateWeights(*(0.1 * torch.randn(s, device="cuda") for s in ((8, 6), (8,), (6, 8), (6,))))
    assert can_use_fused(q, k, v, 0.125, q_int=qi, gate=gate)
    assert "no gate" in fused_unsupported_reason(q, k, v, 0.125, q_int=qi)  # two SDPA calls do that
    with use_backend("reference"):
        assert not should_use_fused(q, k, v, 0.125, q_int=qi, gate=gate)
    out, _ = fused_interaction_attention(q, k, v, 0.125, q_int=qi, gate=gate)
    with use_backend("reference"):
        ref, _ = interaction_attention(q, k, v, 0.125, q_int=qi, gate=gate)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_ivit_step_fused_matches_reference_on_gpu():
    """A whole I-ViT-S/16 forward_aligned + backward under bf16 autocast: fused vs reference path."""
    timm = pytest.importorskip("timm")
    import lfi.models.ivit as ivit_module
    from lfi.models.ivit import interactionize

    torch.manual_seed(0)
    model = interactionize(
        timm.create_model("vit_small_patch16_224", pretrained=False), freeze_backbone=False
    )
    model = model.cuda()
    for layer in model.interaction_layers().values():  # non-trivial gates
        torch.nn.init.normal_(layer.control.fc2.weight, std=0.5)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    reference_fn = ivit_module.interaction_attention

    def dispatch(*args, **kwargs):
        if should_use_fused(*args, **kwargs):
            return fused_interaction_attention(*args, **kwargs)
        return reference_fn(*args, **kwargs)

    results = {}
    try:
        ivit_module.interaction_attention = dispatch
        for backend in ("reference", "fused"):
            model.zero_grad(set_to_none=True)
            with use_backend(backend), torch.autocast("cuda", dtype=torch.bfloat16):
                logits, maps = model.forward_aligned(x)
                loss = logits.float().square().mean() + sum(m.float().square().sum() for m in maps.values())
            loss.backward()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            results[backend] = (logits.detach().float(), grads)
    finally:
        ivit_module.interaction_attention = reference_fn
    (ref_logits, ref_grads), (fused_logits, fused_grads) = results["reference"], results["fused"]
    assert (fused_logits - ref_logits).norm() / ref_logits.norm() < 3e-2
    for name in (
        "vit.blocks.11.attn.iq.weight",
        "vit.blocks.11.attn.control.fc1.weight",
        "vit.blocks.0.attn.qkv.weight",
    ):
        a, b = fused_grads[name].float(), ref_grads[name].float()
        assert (a - b).norm() / b.norm() < 5e-2, name
