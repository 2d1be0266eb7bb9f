"""benchmarks/attention_kernels.one_sdpa, the measured alternative to the ungated path's two SDPA calls, computes
the same output, under a mask that varies over queries too."""

from __future__ import annotations

import torch
from attention_kernels import one_sdpa  # benchmarks/, on sys.path (conftest.py)

from lfi.models.interaction_attention import interaction_attention


def test_one_call_over_stacked_queries_matches_the_library_path():
    g = torch.Generator().manual_seed(0)
    q, k, v, q_int = torch.randn(4, 2, 3, 9, 8, generator=g).unbind(0)
    per_query = (torch.rand(2, 1, 9, 9, generator=g) > 0.4) | torch.eye(9, dtype=torch.bool)
    for mask in (None, per_query):
        want, _ = interaction_attention(q, k, v, 0.4, q_int, attn_mask=mask)
        torch.testing.assert_close(one_sdpa(q, k, v, 0.4, q_int, mask), want, atol=1e-5, rtol=1e-4)
