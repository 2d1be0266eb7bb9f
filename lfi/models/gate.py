"""The gated control network (paper Eq. 5-6) as a module holding the FFN's weights (or the linear gate's)."""

from __future__ import annotations

import torch
from torch import nn

from lfi.models.interaction_attention import GateWeights


class GatedControl(nn.Module):
    """FFN over the 2H head values of [C_AGT; C_VFM] at each query-key pair -> 2H gates; hidden=0 makes it the
    per-pair linear gate (one 2H x 2H layer, no hidden layer), a cheaper variant of Eq. 5.

    The module only holds the weights: the attention implementations apply them (`gate_values` in the
    reference, inside the kernels on a GPU for the FFN; the linear gate runs on the reference path), so they
    take `weights()` rather than calling the module.

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
        if hidden < 0:
            raise ValueError(f"gate hidden width must be >= 0 (0: the linear gate), got {hidden}")
        pairs = 2 * num_heads
        self.fc1 = nn.Linear(pairs, hidden or pairs, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, pairs, device=device, dtype=dtype) if hidden else None
        output = self.fc2 or self.fc1
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)

    def weights(self) -> GateWeights:
        """w1 (E, 2H), b1 (E,), w2 (2H, E), b2 (2H,), as `interaction_attention` takes them (w2 = b2 = None
        for the linear gate, whose w1 is (2H, 2H))."""
        if self.fc2 is None:
            return GateWeights(self.fc1.weight, self.fc1.bias, None, None)
        return GateWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
