"""The per-pair linear gate (`model.gate_hidden=0`): Eq. 5 without the FFN's hidden layer (issue 18, item 3)."""

from __future__ import annotations

import pytest
import timm
import torch

import lfi
from lfi.config import load_config
from lfi.models.gate import GatedControl
from lfi.models.interaction_attention import gate_values
from lfi.models.kernels.fused import fused_unsupported_reason


def small_vit() -> torch.nn.Module:
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=10)
    return timm.create_model("vit_small_patch16_224", **args).eval()


def test_linear_gate_is_one_zero_initialised_layer() -> None:
    gate = GatedControl(num_heads=3, hidden=0)
    assert gate.fc2 is None and tuple(gate.fc1.weight.shape) == (6, 6)
    assert sum(p.numel() for p in gate.parameters()) == 6 * 6 + 6  # the FFN of width 8 has 6*8+8+8*6+6
    w = gate.weights()
    assert w.w2 is None and w.b2 is None and not w.w1.any() and not w.b1.any()


def test_linear_gate_values_are_a_sigmoid_of_one_linear_map() -> None:
    torch.manual_seed(0)
    gate = GatedControl(num_heads=2, hidden=0)
    torch.nn.init.normal_(gate.fc1.weight)
    torch.nn.init.normal_(gate.fc1.bias)
    c_agt, c_vfm = torch.rand(3, 2, 5, 7).softmax(-1), torch.rand(3, 2, 5, 7).softmax(-1)
    g1, g2 = gate_values(c_agt, c_vfm, gate.weights())
    x = torch.cat([c_agt * 7, c_vfm * 7], dim=1).movedim(1, -1)  # (B, M, N, 2H), scaled by the key count
    expected = torch.sigmoid(x @ gate.fc1.weight.T + gate.fc1.bias).movedim(-1, 1)
    torch.testing.assert_close(torch.cat([g1, g2], dim=1), expected)


def test_linear_gate_ivit_starts_as_the_original_and_trains_its_gate() -> None:
    vit = small_vit()
    ivit = lfi.interactionize(vit, gate_hidden=0, freeze_backbone=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ivit.eval()(x) - vit(x)).abs().max() <= 1e-4
    logits, _ = ivit.train().forward_aligned(x)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    grads = {n: p.grad for n, p in ivit.named_parameters() if ".control." in n}
    assert grads and all(".control.fc1." in n for n in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_the_kernels_leave_the_linear_gate_to_the_reference_path() -> None:
    pytest.importorskip("triton")
    q = torch.randn(1, 3, 8, 32)
    ffn, linear = GatedControl(num_heads=3).weights(), GatedControl(num_heads=3, hidden=0).weights()
    assert fused_unsupported_reason(q, q, q, 0.25, q, ffn, dispatch=False) is None  # the kernels take the FFN
    reason = fused_unsupported_reason(q, q, q, 0.25, q, linear, dispatch=False)
    assert reason is not None and "linear gate" in reason


def test_config_takes_gate_hidden_zero() -> None:
    cfg = load_config("configs/study/table3/iq_ic_gc.yaml", ["model.gate_hidden=0"])
    assert cfg.model.gate_hidden == 0
