"""Fused GPU kernels for interaction attention (Triton). The CPU and unsupported cases keep the reference."""

from lfi.models.kernels.fused import (
    BACKEND_ENV,
    BACKENDS,
    Backend,
    any_gate_values,
    attention_backend,
    can_use_fused,
    fused_interaction_attention,
    fused_unsupported_reason,
    is_per_head_gate,
    per_head_gate_values,
    should_use_fused,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "Backend",
    "any_gate_values",
    "attention_backend",
    "can_use_fused",
    "fused_interaction_attention",
    "fused_unsupported_reason",
    "is_per_head_gate",
    "per_head_gate_values",
    "should_use_fused",
    "use_backend",
]
