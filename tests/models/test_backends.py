"""The attention backend: chosen once per layer at build (config, else $LFI_ATTENTION), and what each one runs."""

from __future__ import annotations

import pytest
import timm
import torch

import lfi.models.backends as backends
from lfi.models.backends import ATTENTION, resolve_backend
from lfi.models.interaction_attention import GateWeights, interaction_attention
from lfi.models.ivit import IViTConfig, interactionize


def _qkv(B=2, H=3, N=10, d=32):
    return [torch.randn(B, H, N, d) for _ in range(4)]


def _gate(heads=3, hidden=4):
    return GateWeights(
        *(torch.randn(s) for s in ((hidden, 2 * heads), (hidden,), (2 * heads, hidden), (2 * heads,)))
    )


def _tiny_ivit(**overrides):
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    return interactionize(vit, **overrides)


def test_backend_is_read_once_when_the_layer_is_built(monkeypatch):
    monkeypatch.delenv("LFI_ATTENTION", raising=False)
    assert resolve_backend() == "auto"  # the kernels where they apply, the reference elsewhere
    monkeypatch.setenv("LFI_ATTENTION", "reference")
    model = _tiny_ivit()
    assert {layer.backend for layer in model.interaction_layers().values()} == {"reference"}
    monkeypatch.setenv("LFI_ATTENTION", "fused")  # later changes do not reach built layers
    assert {layer.backend for layer in model.interaction_layers().values()} == {"reference"}
    explicit = _tiny_ivit(attention="auto")  # the config's choice wins over the environment
    assert {layer.backend for layer in explicit.interaction_layers().values()} == {"auto"}


def test_unknown_backends_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="attention"):
        IViTConfig(attention="fast")
    monkeypatch.setenv("LFI_ATTENTION", "fast")
    with pytest.raises(ValueError, match="LFI_ATTENTION"):
        _tiny_ivit()
    with pytest.raises(ValueError, match="expected one of"):
        resolve_backend("fast")


def test_cpu_keeps_the_reference_path():
    q, k, v, qi = _qkv()
    gate = _gate()
    want, _ = interaction_attention(q, k, v, 0.2, qi, gate)
    got, _ = ATTENTION["auto"](q, k, v, 0.2, qi, gate)
    torch.testing.assert_close(got, want)
    with pytest.raises(RuntimeError, match="cannot run"):
        ATTENTION["fused"](q, k, v, 0.2, qi, gate)


def test_plain_attention_never_needs_the_kernels():
    q, k, v, _ = _qkv()
    want, _ = interaction_attention(q, k, v, 0.2)
    for backend in ("auto", "fused"):  # plain attention is SDPA already: no error, just the reference
        torch.testing.assert_close(ATTENTION[backend](q, k, v, 0.2)[0], want)


def test_auto_takes_the_kernels_where_they_apply_and_leaves_compiled_layers_to_the_compiler(monkeypatch):
    q, k, v, qi = _qkv()
    gate = _gate()
    monkeypatch.setattr(backends, "fused_unsupported_reason", lambda *args, **kwargs: None)  # as on a GPU
    monkeypatch.setattr(backends, "fused_interaction_attention", lambda *args: ("fused", {}))
    assert backends.auto_attention(q, k, v, 0.2, qi, gate)[0] == "fused"
    assert backends.fused_attention(q, k, v, 0.2, qi, gate)[0] == "fused"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert isinstance(backends.auto_attention(q, k, v, 0.2, qi, gate)[0], torch.Tensor)  # the reference
    assert backends.fused_attention(q, k, v, 0.2, qi, gate)[0] == "fused"  # an explicit choice holds


def test_a_built_layer_can_be_switched():
    model = _tiny_ivit(attention="fused").eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="cannot run"):  # no CUDA here
        model(x)
    for layer in model.interaction_layers().values():
        layer.backend = "reference"
    assert model(x).shape == (1, 5)
