"""The gated control network (paper Eq. 5-6) as a module holding the FFN's weights."""

from __future__ import annotations

import torch
from torch import nn

from lfi.models.interaction_attention import GateWeights, gate_values


class GatedControl(nn.Module):
    """FFN over the 2H head values of [C_AGT; C_VFM] at each query-key pair -> 2H gates (see `gate_values`).

    Initialisation: the output layer is zero, so g1 = g2 = 1/2 everywhere at the start. Since the interaction
    queries start as a copy of the original ones (C_AGT = C_VFM), C_F = C_VFM exactly and the converted
    model starts as the original; both paths receive gradient from the first step (a gate initialised near
    0 or 1 would starve one of them through the sigmoid's flat tails).
    """

    def __init__(self, num_heads: int, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * num_heads, hidden)
        self.fc2 = nn.Linear(hidden, 2 * num_heads)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def weights(self) -> GateWeights:
        return GateWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def forward(self, c_agt: torch.Tensor, c_vfm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c_agt, c_vfm: (B, H, M, N) -> g1, g2: (B, H, M, N)."""
        return gate_values(c_agt, c_vfm, self.weights())
