"""The gated control network (paper Eq. 5-6) as a module holding the FFN's weights."""

from __future__ import annotations

import torch
from torch import nn

from lfi.models.interaction_attention import GateWeights


class GatedControl(nn.Module):
    """FFN over the 2H head values of [C_AGT; C_VFM] at each query-key pair -> 2H gates.

    The module only holds the weights: the attention implementations apply them (`gate_values` in the
    reference, inside the kernels on a GPU), so they take `weights()` rather than calling the module.

    Initialisation: the output layer is zero, so g1 = g2 = 1/2 everywhere at the start. Since the interaction
    queries start as a copy of the original ones (C_AGT = C_VFM), C_F = C_VFM exactly and the converted
    model starts as the original; both paths receive gradient from the first step (a gate initialised near
    0 or 1 would starve one of them through the sigmoid's flat tails).

    device, dtype: those of the layer the gate joins, so that a converted bf16 or CUDA model runs as it is.
    """

    def __init__(
        self,
        num_heads: int,
        hidden: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * num_heads, hidden, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, 2 * num_heads, device=device, dtype=dtype)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def weights(self) -> GateWeights:
        """w1 (E, 2H), b1 (E,), w2 (2H, E), b2 (2H,), as `interaction_attention` takes them."""
        return GateWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
