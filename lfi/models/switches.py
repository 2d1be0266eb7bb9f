"""The conversion switches shared by I-ViT and I-DETR: the paper's Table 3 (IQ, GC, IC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Constraint = Literal["interaction", "original", "none"]


@dataclass(frozen=True)
class InteractionSwitches:
    """interaction_queries (IQ): add the interaction query projection P'_q and C_AGT; off keeps the layer plain.
    gated_control (GC): fuse C_AGT and C_VFM with the gated control network (Eq. 5-6); without it the fusion
        is the fixed average C_F = (C_AGT + C_VFM) / 2, the gate's own starting point.
    constraint (IC): which map the alignment loss supervises: "interaction" (C_AGT, the paper's method),
        "original" (C_VFM, Table 3 row 3, i.e. attention transfer) or "none".
    gate_hidden: hidden width of the gate's FFN.
    """

    interaction_queries: bool = True
    gated_control: bool = True
    constraint: Constraint = "interaction"
    gate_hidden: int = 8

    def __post_init__(self) -> None:
        if self.constraint not in ("interaction", "original", "none"):
            raise ValueError(
                f"constraint must be 'interaction', 'original' or 'none', got {self.constraint!r}"
            )
        if self.gated_control and not self.interaction_queries:
            raise ValueError(
                "gated_control=True needs interaction_queries=True (the gate fuses C_AGT and C_VFM)"
            )
        if self.constraint == "interaction" and not self.interaction_queries:
            raise ValueError(
                "constraint='interaction' needs interaction_queries=True; use 'original' or 'none'"
            )

    @property
    def supervised_map(self) -> str | None:
        """Name of the map the alignment loss reads ("agt", "vfm"), None without a constraint."""
        return {"interaction": "agt", "original": "vfm", "none": None}[self.constraint]
