"""I-ViT: a timm Vision Transformer whose blocks attend through interaction attention (paper Sec. 4.1).

`interactionize(vit)` converts any timm `VisionTransformer` (ViT/DeiT, any depth, heads, patch or image size)
into an `InteractionViT`. Each converted block gets one new query projection P'_q (initialised as a copy of
the block's own query weights) and a gated control network; keys, values, output projection, residual and MLP
stay the block's own. Freshly converted, the model computes what the original computed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from lfi.maps import attention_to_grid
from lfi.models.backends import ATTENTION, Backend, resolve_backend
from lfi.models.gate import GatedControl
from lfi.models.interaction_attention import MapRequest
from lfi.models.switches import InteractionSwitches, added_parameters, aligned_layers, converted_layers


@dataclass(frozen=True)
class IViTConfig(InteractionSwitches):
    """How a ViT is converted: the switches of `InteractionSwitches` (the paper's Table 3: interaction_queries,
    gated_control, constraint; layers = the blocks to convert, align_layers, freeze_backbone), with the
    backbone frozen by default (paper 5.1.2)."""

    freeze_backbone: bool = True


#: The five rows of the paper's Table 3 (IQ / IC / GC), as conversion settings.
TABLE3: dict[str, IViTConfig] = {
    "vit": IViTConfig(interaction_queries=False, gated_control=False, constraint="none"),
    "iq_gc": IViTConfig(constraint="none"),
    "ic_original": IViTConfig(interaction_queries=False, gated_control=False, constraint="original"),
    "iq_ic": IViTConfig(gated_control=False),
    "iq_ic_gc": IViTConfig(),
}


class InteractionAttention(nn.Module):
    """Drop-in replacement for a timm `Attention` that computes interaction attention (Eq. 3-9).

    Takes over the original module's projections and norms (same parameters, same state-dict names), and adds
    `iq` (P'_q, dim -> heads*head_dim) and `control` (the gated control network), both on the device and in
    the dtype of the original weights. `backend`: the implementation its forward calls (lfi.models.backends),
    fixed here from `backend` or $LFI_ATTENTION.
    """

    def __init__(
        self,
        attn: nn.Module,
        interaction_queries: bool,
        gated_control: bool,
        gate_hidden: int,
        backend: Backend | None = None,
    ):
        super().__init__()
        for name in ("qkv", "num_heads", "head_dim", "scale", "proj"):
            if not hasattr(attn, name):
                raise TypeError(
                    f"{type(attn).__name__} has no '{name}': expected a timm Attention with fused qkv"
                )
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.out_gate = getattr(attn, "gate", None)  # timm's optional output gate (newer timm), kept as is
        self.iq = self._copy_query_projection(attn.qkv) if interaction_queries else None
        like = dict(device=attn.qkv.weight.device, dtype=attn.qkv.weight.dtype)
        self.control = GatedControl(self.num_heads, gate_hidden, **like) if gated_control else None
        self.backend: Backend = resolve_backend(backend)
        self.request: MapRequest | None = None
        self.maps: dict[str, torch.Tensor] = {}

    def _copy_query_projection(self, qkv: nn.Linear) -> nn.Linear:
        attn_dim = self.num_heads * self.head_dim
        iq = nn.Linear(
            qkv.in_features,
            attn_dim,
            bias=qkv.bias is not None,
            device=qkv.weight.device,
            dtype=qkv.weight.dtype,
        )
        with torch.no_grad():
            iq.weight.copy_(qkv.weight[:attn_dim])
            if qkv.bias is not None:
                iq.bias.copy_(qkv.bias[:attn_dim])
        return iq

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, H*d) -> (B, H, N, d)."""
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C). Requested maps land in `self.maps` (see `InteractionViT.forward`)."""
        if is_causal:
            raise NotImplementedError("interaction attention over a causal mask is not supported")
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q_int = self.q_norm(self._heads(self.iq(x))) if self.iq is not None else None
        out, self.maps = ATTENTION[self.backend](
            q, k, v, self.scale,
            q_int=q_int,
            gate=self.control.weights() if self.control is not None else None,
            request=self.request,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop.p if self.training else 0.0,
        )  # fmt: skip
        out = self.norm(out.transpose(1, 2).reshape(B, N, -1))
        if self.out_gate is not None:
            out = out * self.out_gate(x).sigmoid()
        return self.proj_drop(self.proj(out))


class InteractionOutput(NamedTuple):
    """logits: (B, num_classes); maps: {block index: {map name: (B, H, R, N)}}."""

    logits: torch.Tensor
    maps: dict[int, dict[str, torch.Tensor]]


class InteractionViT(nn.Module):
    """A timm ViT with interaction attention in the chosen blocks. `self.vit` is the (converted) timm model.

    forward(x) -> logits, exactly like timm. forward(x, request) -> InteractionOutput with the maps of
    `request` from the blocks in `layers` (default: all converted blocks), from the same single pass.
    """

    def __init__(self, vit: nn.Module, config: IViTConfig) -> None:
        super().__init__()
        self.vit, self.config = vit, config
        self.converted = converted_layers(config.layers, len(vit.blocks), "IViTConfig.layers")
        for i in self.converted:
            attn = vit.blocks[i].attn
            vit.blocks[i].attn = InteractionAttention(
                attn, config.interaction_queries, config.gated_control, config.gate_hidden, config.attention
            )
        self.align_layers = self._resolve_align_layers(config.align_layers)
        if config.freeze_backbone:
            self._freeze_backbone()

    def _resolve_align_layers(self, layers: tuple[int, ...] | None) -> tuple[int, ...]:
        return aligned_layers(layers, self.converted, len(self.vit.blocks), "IViTConfig.align_layers")

    def _freeze_backbone(self) -> None:
        if self.config.supervised_map == "vfm" and not self.config.interaction_queries:
            raise ValueError(
                "constraint='original' with a frozen backbone has nothing to train: C_VFM depends only on frozen "
                "weights. Set freeze_backbone=False to supervise the original queries (Table 3 row 3)."
            )
        for p in self.vit.parameters():
            p.requires_grad_(False)
        for p in self.interaction_parameters():
            p.requires_grad_(True)
        for p in self.vit.get_classifier().parameters():
            p.requires_grad_(True)

    def interaction_layers(self) -> dict[int, InteractionAttention]:
        return {i: self.vit.blocks[i].attn for i in self.converted}

    def interaction_parameters(self) -> list[nn.Parameter]:
        """Parameters added by the conversion: P'_q and the gates."""
        return added_parameters(self.interaction_layers().values())

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    @property
    def has_class_token(self) -> bool:
        return getattr(self.vit, "cls_token", None) is not None

    def patch_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid (gh, gw) for an input of (H, W) pixels."""
        pe = self.vit.patch_embed
        if hasattr(pe, "dynamic_feat_size"):
            return tuple(pe.dynamic_feat_size(image_size))
        return tuple(pe.grid_size)

    def alignment_request(self) -> MapRequest | None:
        """What the alignment loss needs: the class-token row of the supervised map (all rows without one)."""
        name = self.config.supervised_map
        if name is None:
            return None
        return MapRequest.of(name, rows=1 if self.has_class_token else None)

    def forward(
        self, x: torch.Tensor, request: MapRequest | None = None, layers: tuple[int, ...] | None = None
    ) -> torch.Tensor | InteractionOutput:
        """x: (B, 3, H, W). Returns logits (B, K), or InteractionOutput when `request` is given."""
        if request is None:
            return self.vit(x)
        chosen = self.interaction_layers()
        if layers is not None:
            chosen = {i: chosen[i] for i in self._resolve_align_layers(layers)}
        try:
            for layer in chosen.values():
                layer.request = request
            logits = self.vit(x)
            return InteractionOutput(logits, {i: layer.maps for i, layer in chosen.items()})
        finally:
            for layer in chosen.values():
                layer.request, layer.maps = None, {}

    def forward_aligned(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One pass -> logits (B, K) and the supervised map of each alignment layer as {layer: (B, gh, gw)}.

        The student side of Eq. 14: class-token row of C_AGT (or C_VFM for constraint='original') over the
        patch tokens, mean over heads. Empty dict when the config has no constraint or no alignment layers.
        """
        request = self.alignment_request()
        if request is None or not self.align_layers:
            return self.vit(x), {}
        out = self(x, request, layers=self.align_layers)
        grid = self.patch_grid(tuple(x.shape[-2:]))
        name = self.config.supervised_map
        # all layers in one call: the few small kernels per map are launched once, not once per layer
        stacked = torch.stack([m[name] for m in out.maps.values()])
        return out.logits, dict(
            zip(out.maps, attention_to_grid(stacked, self.num_prefix_tokens, grid), strict=True)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.vit.forward_head(x, pre_logits=pre_logits)


def interactionize(vit: nn.Module, config: IViTConfig | None = None, inplace: bool = False, **overrides):
    """Convert a timm VisionTransformer into an I-ViT. Keyword overrides update `config` (see IViTConfig).

    >>> ivit = interactionize(timm.create_model("vit_small_patch16_224"), freeze_backbone=True)
    """
    if not hasattr(vit, "blocks") or not hasattr(vit, "patch_embed"):
        raise TypeError(f"interactionize expects a timm VisionTransformer, got {type(vit).__name__}")
    config = replace(config or IViTConfig(), **overrides)
    return InteractionViT(vit if inplace else copy.deepcopy(vit), config)
