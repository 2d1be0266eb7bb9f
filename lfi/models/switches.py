"""What I-ViT and I-DETR conversions share: the paper's Table 3 switches (IQ, GC, IC) and layer bookkeeping."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from lfi.models.backends import BACKENDS, Backend

Constraint = Literal["interaction", "original", "none"]


@dataclass(frozen=True)
class InteractionSwitches:
    """interaction_queries (IQ): add the interaction query projection P'_q and C_AGT; off keeps the layer plain.
    gated_control (GC): fuse C_AGT and C_VFM with the gated control network (Eq. 5-6); without it the fusion
        is the fixed average C_F = (C_AGT + C_VFM) / 2, the gate's own starting point.
    constraint (IC): which map the alignment loss supervises: "interaction" (C_AGT, the paper's method),
        "original" (C_VFM, Table 3 row 3, i.e. attention transfer) or "none".
    gate_hidden: hidden width of the gate's FFN; 0 = the per-pair linear gate (no hidden layer).
    attention: which implementation the converted layers run ("auto", "fused", "reference"; see
        lfi.models.backends); None reads $LFI_ATTENTION when the model is built (default "auto"). Not a
        switch of the method: every choice computes the same function.
    layers: indices of the layers (ViT blocks, DETR encoder layers) to convert; None = all; negative
        indices count from the end.
    align_layers: converted layers whose maps the alignment loss reads; None = the deeper half of them. Why:
        attention in early layers is local and position-driven and becomes object-centred only in deeper
        ones (Raghu et al. 2021; Caron et al. 2021), which is what C_VLM describes; forcing early layers onto
        an object map fights their role. Pass every layer to follow the paper literally.
    freeze_backbone: train only P'_q, the gates and the task head (paper 5.1.2); False trains everything.
    """

    interaction_queries: bool = True
    gated_control: bool = True
    constraint: Constraint = "interaction"
    gate_hidden: int = 8
    attention: Backend | None = None
    layers: tuple[int, ...] | None = None
    align_layers: tuple[int, ...] | None = None
    freeze_backbone: bool = False

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
        if self.attention is not None and self.attention not in BACKENDS:
            raise ValueError(f"attention must be None or one of {BACKENDS}, got {self.attention!r}")

    @property
    def supervised_map(self) -> str | None:
        """Name of the map the alignment loss reads ("agt", "vfm"), None without a constraint."""
        return {"interaction": "agt", "original": "vfm", "none": None}[self.constraint]


def converted_layers(requested: tuple[int, ...] | None, depth: int, where: str) -> tuple[int, ...]:
    """Layer indices to convert (negative ones count from the end), sorted; None = every layer."""
    layers = requested if requested is not None else tuple(range(depth))
    bad = [i for i in layers if not -depth <= i < depth]
    if bad:
        raise ValueError(f"{where}: {bad} out of range for {depth} layers")
    return tuple(sorted({i % depth for i in layers}))


def aligned_layers(
    requested: tuple[int, ...] | None, converted: tuple[int, ...], depth: int, where: str
) -> tuple[int, ...]:
    """Converted layers whose maps the alignment loss reads; None = the deeper half of `converted`."""
    if requested is None:
        return converted[len(converted) // 2 :]
    resolved = converted_layers(requested, depth, where)
    missing = [i for i in resolved if i not in converted]
    if missing:
        raise ValueError(f"{where}: layers {missing} are not converted ({converted})")
    return resolved


def added_parameters(layers: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters a conversion added to interaction-attention layers: P'_q (`iq`) and the gate (`control`)."""
    return [
        p
        for layer in layers
        for extra in (layer.iq, layer.control)
        if extra is not None
        for p in extra.parameters()
    ]
