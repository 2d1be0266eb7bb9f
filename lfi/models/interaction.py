"""The interaction-model base shared by I-ViT (`lfi.models.ivit`) and I-DETR (`lfi.models.idetr`).

`InteractionLayer`: what every converted attention layer adds to the layer it replaces (P'_q, the gated
control network, the backend, the map request) and the one call into Eq. 3-9 (`attend`). Subclasses only
adapt the host library's projections and calling convention.

`InteractionModel`: converting the chosen layers of a host model (`convert`), the layers and parameters that
conversion added, and the map-request protocol (`requesting`, `layer_maps`): the request is set on the chosen
layers for one pass and their maps collected, then both are cleared whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lfi.models.backends import ATTENTION, Backend, resolve_backend
from lfi.models.gate import GatedControl
from lfi.models.interaction_attention import MapRequest
from lfi.models.switches import InteractionSwitches, added_parameters, aligned_layers, converted_layers

#: {layer index: {map name: (B, H, R, N)}}: the maps one pass returns for a request.
LayerMaps = dict[int, dict[str, torch.Tensor]]


def copy_query_projection(weights: nn.Linear, attn_dim: int) -> nn.Linear:
    """P'_q: a new (in -> attn_dim) projection initialised as a copy of the first attn_dim output rows of
    `weights` (the query rows of a fused qkv, or the whole of a q_proj), on its device and in its dtype."""
    iq = nn.Linear(weights.in_features, attn_dim, bias=weights.bias is not None,
                   device=weights.weight.device, dtype=weights.weight.dtype)  # fmt: skip
    with torch.no_grad():
        iq.weight.copy_(weights.weight[:attn_dim])
        if weights.bias is not None:
            iq.bias.copy_(weights.bias[:attn_dim])
    return iq


class InteractionLayer(nn.Module):
    """Base of a converted attention layer: P'_q (`iq`), the gate (`control`), the backend, the map request.

    query: the replaced layer's query projection, copied into P'_q; num_heads, head_dim: its heads. `backend`:
    the implementation `attend` calls (lfi.models.backends), fixed here from `backend` or $LFI_ATTENTION.
    """

    def __init__(self, query: nn.Linear, num_heads: int, head_dim: int, interaction_queries: bool,
                 gated_control: bool, gate_hidden: int, backend: Backend | None = None) -> None:  # fmt: skip
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.iq = copy_query_projection(query, num_heads * head_dim) if interaction_queries else None
        like = dict(device=query.weight.device, dtype=query.weight.dtype)
        self.control = GatedControl(num_heads, gate_hidden, **like) if gated_control else None
        self.backend: Backend = resolve_backend(backend)
        self.request: MapRequest | None = None
        self.maps: dict[str, torch.Tensor] = {}

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, H*d) -> (B, H, N, d)."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, q_int: torch.Tensor | None,
               attn_mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:  # fmt: skip
        """Eq. 3-9 on (B, H, N, d) heads -> (B, H, N, d); the maps of `self.request` land in `self.maps`."""
        out, self.maps = ATTENTION[self.backend](
            q, k, v, scale,
            q_int=q_int,
            gate=self.control.weights() if self.control is not None else None,
            request=self.request,
            attn_mask=attn_mask,
            dropout_p=dropout_p if self.training else 0.0,
        )  # fmt: skip
        return out


class InteractionModel(nn.Module):
    """Base of I-ViT and I-DETR: a host model whose chosen attention layers are `InteractionLayer`s.

    Subclasses set `self.config` (an `InteractionSwitches`), call `convert` once, and name the host's
    sequence of layers (`host_layers`) and the attribute holding each one's attention (`attention_attr`).
    """

    config: InteractionSwitches
    attention_attr: str
    converted: tuple[int, ...]
    align_layers: tuple[int, ...]

    def host_layers(self) -> nn.ModuleList:
        """The host's blocks (ViT) or encoder layers (DETR), in order."""
        raise NotImplementedError

    def convert(self, layer_type: type[InteractionLayer]) -> None:
        """Replace the attention of the layers in config.layers by `layer_type(attention, IQ, GC, hidden,
        backend)`; resolve config.align_layers. Errors name the config class's field."""
        c, blocks, where = self.config, self.host_layers(), type(self.config).__name__
        self.converted = converted_layers(c.layers, len(blocks), f"{where}.layers")
        for i in self.converted:
            attention = getattr(blocks[i], self.attention_attr)
            replaced = layer_type(
                attention, c.interaction_queries, c.gated_control, c.gate_hidden, c.attention
            )
            setattr(blocks[i], self.attention_attr, replaced)
        self.align_layers = self.resolve_align_layers(c.align_layers)

    def resolve_align_layers(self, layers: tuple[int, ...] | None) -> tuple[int, ...]:
        """Converted layer indices from `layers` (None: the default half; negative: from the end)."""
        where = f"{type(self.config).__name__}.align_layers"
        return aligned_layers(layers, self.converted, len(self.host_layers()), where)

    def interaction_layers(self) -> dict[int, InteractionLayer]:
        blocks = self.host_layers()
        return {i: getattr(blocks[i], self.attention_attr) for i in self.converted}

    def interaction_parameters(self) -> list[nn.Parameter]:
        """Parameters added by the conversion: P'_q and the gates."""
        return added_parameters(self.interaction_layers().values())

    @contextmanager
    def requesting(
        self, request: MapRequest | None, layers: tuple[int, ...] | None = None
    ) -> Iterator[dict[int, InteractionLayer]]:
        """For the passes inside the block, the layers in `layers` (default: all converted) compute the maps of
        `request`; yields those layers ({index: layer}, read after a pass with `layer_maps`). Cleared on exit,
        so a failed pass leaves no request behind."""
        chosen = self.interaction_layers()
        if layers is not None:
            chosen = {i: chosen[i] for i in self.resolve_align_layers(layers)}
        try:
            for layer in chosen.values():
                layer.request = request
            yield chosen
        finally:
            for layer in chosen.values():
                layer.request, layer.maps = None, {}


def layer_maps(chosen: dict[int, InteractionLayer]) -> LayerMaps:
    """The maps the last pass left in each chosen layer: {layer: {name: (B, H, R, N)}}."""
    return {i: layer.maps for i, layer in chosen.items()}
