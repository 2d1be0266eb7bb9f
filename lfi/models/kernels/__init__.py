"""Fused GPU kernels for interaction attention (Triton), for gated layers on CUDA; see `fused`."""

from lfi.models.kernels.fused import fused_interaction_attention, fused_unsupported_reason

__all__ = ["fused_interaction_attention", "fused_unsupported_reason"]
