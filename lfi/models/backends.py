"""Which implementation of interaction attention a layer runs, chosen once, when the layer is built.

Like timm's `Attention.fused_attn`, every interaction-attention layer holds a `backend` attribute, set at
construction from its config (`InteractionSwitches.attention`) or else from $LFI_ATTENTION, and its forward
calls `ATTENTION[self.backend]`:
  "auto" (default): the Triton kernels for the calls they take (a gated layer on CUDA, supported shapes, map
      rows rather than full maps; `fused_unsupported_reason`), the reference for the others (the CPU; no gate,
      where two SDPA calls are faster than the kernels). Under torch.compile the layer is left to the
      compiler (the kernels are opaque to it), which then compiles the reference math. On an H200 the kernels
      meet the accuracy bounds of tests/kernels (benchmarks/results/kernels_gpu_h200.txt), and an I-ViT-S/16
      train step takes ~0.6x the reference's time and ~0.3x its memory (benchmarks/README.md);
  "reference": the PyTorch reference everywhere (the exact math, e.g. to check a result);
  "fused": the kernels for every layer with interaction queries, an error where they cannot take the call
      (benchmarks use it to be sure they measure the kernels).
The reference (`lfi.models.interaction_attention`) does not know the kernels; this module is where the two
meet. Set `layer.backend` to switch a built layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import torch

from lfi.models.interaction_attention import GateWeights, MapRequest, interaction_attention
from lfi.models.kernels import fused_interaction_attention, fused_unsupported_reason

Backend = Literal["auto", "fused", "reference"]
BACKENDS: tuple[Backend, ...] = ("auto", "fused", "reference")
BACKEND_ENV = "LFI_ATTENTION"


def resolve_backend(backend: Backend | None = None) -> Backend:
    """`backend` if given, else $LFI_ATTENTION, else "auto"; anything else is refused."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"attention backend: expected one of {BACKENDS}, got {backend!r}")
        return backend
    backend = os.environ.get(BACKEND_ENV, "auto")
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={backend!r}: expected one of {BACKENDS}")
    return backend


def auto_attention(
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
    """Backend "auto": the kernels where they take the call and torch.compile is not tracing, else the
    reference. Arguments and results as `interaction_attention`."""
    args = (q, k, v, scale, q_int, gate, request, attn_mask, dropout_p)
    if not torch.compiler.is_compiling() and fused_unsupported_reason(*args) is None:
        return fused_interaction_attention(*args)
    return interaction_attention(*args)


def fused_attention(
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
    """Backend "fused": the kernels, or a RuntimeError naming why they cannot take the call. Plain attention
    (no q_int) is SDPA already and takes the reference. Arguments and results as `interaction_attention`."""
    args = (q, k, v, scale, q_int, gate, request, attn_mask, dropout_p)
    if q_int is None:
        return interaction_attention(*args)
    reason = fused_unsupported_reason(*args)
    if reason is not None:
        raise RuntimeError(f"interaction attention backend 'fused' cannot run this call: {reason}")
    return fused_interaction_attention(*args)


AttentionFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
ATTENTION: dict[Backend, AttentionFn] = {
    "auto": auto_attention,
    "fused": fused_attention,
    "reference": interaction_attention,
}
