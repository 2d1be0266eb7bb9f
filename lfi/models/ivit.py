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
from lfi.models.backends import Backend
from lfi.models.graphs import GraphedForward, is_deterministic
from lfi.models.interaction import InteractionLayer, InteractionModel, layer_maps
from lfi.models.interaction_attention import MapRequest
from lfi.models.switches import InteractionSwitches


@dataclass(frozen=True)
class IViTConfig(InteractionSwitches):
    """How a ViT is converted: the switches of `InteractionSwitches` (the paper's Table 3: interaction_queries,
    gated_control, constraint; layers = the blocks to convert, align_layers, freeze_backbone), with the
    backbone frozen by default (paper 5.1.2).

    cuda_graphs: where nothing before the classifier trains (a frozen plain ViT: the linear probe) and nothing
        draws random numbers, replay that trunk's forward on CUDA from graphs (`lfi.models.graphs`): the same
        kernels, the same values, one launch instead of hundreds. False keeps it eager. Not a switch of the
        method. The trunk's tensors are found where they were at build time: replace its modules afterwards
        (not its parameters' values, which may change) only in a model built with cuda_graphs=False."""

    freeze_backbone: bool = True
    cuda_graphs: bool = True


#: The five rows of the paper's Table 3 (IQ / IC / GC), as conversion settings.
TABLE3: dict[str, IViTConfig] = {
    "vit": IViTConfig(interaction_queries=False, gated_control=False, constraint="none"),
    "iq_gc": IViTConfig(constraint="none"),
    "ic_original": IViTConfig(interaction_queries=False, gated_control=False, constraint="original"),
    "iq_ic": IViTConfig(gated_control=False),
    "iq_ic_gc": IViTConfig(),
}


class InteractionAttention(InteractionLayer):
    """Drop-in replacement for a timm `Attention` that computes interaction attention (Eq. 3-9).

    Takes over the original module's projections and norms (same parameters, same state-dict names), and adds
    `iq` (P'_q, dim -> heads*head_dim, a copy of the query rows of qkv) and `control` (the gated control
    network), as `InteractionLayer` does for every host.
    """

    def __init__(
        self,
        attn: nn.Module,
        interaction_queries: bool,
        gated_control: bool,
        gate_hidden: int,
        backend: Backend | None = None,
    ):
        for name in ("qkv", "num_heads", "head_dim", "scale", "proj"):
            if not hasattr(attn, name):
                raise TypeError(
                    f"{type(attn).__name__} has no '{name}': expected a timm Attention with fused qkv"
                )
        super().__init__(attn.qkv, attn.num_heads, attn.head_dim, interaction_queries, gated_control, gate_hidden,
                         backend)  # fmt: skip
        self.scale = attn.scale
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.out_gate = getattr(attn, "gate", None)  # timm's optional output gate (newer timm), kept as is

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
        out = self.attend(q, k, v, self.scale, q_int, attn_mask, self.attn_drop.p)
        out = self.norm(out.transpose(1, 2).reshape(B, N, -1))
        if self.out_gate is not None:
            out = out * self.out_gate(x).sigmoid()
        return self.proj_drop(self.proj(out))


class InteractionOutput(NamedTuple):
    """logits: (B, num_classes); maps: {block index: {map name: (B, H, R, N)}}."""

    logits: torch.Tensor
    maps: dict[int, dict[str, torch.Tensor]]


class InteractionViT(InteractionModel):
    """A timm ViT with interaction attention in the chosen blocks. `self.vit` is the (converted) timm model.

    forward(x) -> logits, exactly like timm. forward(x, request) -> InteractionOutput with the maps of
    `request` from the blocks in `layers` (default: all converted blocks), from the same single pass.
    """

    attention_attr = "attn"

    def __init__(self, vit: nn.Module, config: IViTConfig) -> None:
        super().__init__()
        self.vit, self.config = vit, config
        self.convert(InteractionAttention)
        if config.freeze_backbone:
            self._freeze_backbone()
        # chosen once, here: the trunk's graphs serve calls on CUDA that need no gradient (`GraphedForward`)
        self.trunk_graphs = GraphedForward() if config.cuda_graphs and self._fixed_trunk() else None
        # looked up at each call (a replaced parameter is the one read); listing them through
        # Module.parameters() would cost ~1 ms of host time per call, these lookups ~10 us
        self._trunk_slots = self._find_trunk_slots() if self.trunk_graphs is not None else []

    def host_layers(self) -> nn.ModuleList:
        return self.vit.blocks

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

    def _fixed_trunk(self) -> bool:
        """Whether everything before the classifier is a fixed function of the image: frozen, no parameter
        added by the conversion, no randomness."""
        head = self.vit.get_classifier()
        return (
            self.config.freeze_backbone
            and not self.interaction_parameters()
            and all(is_deterministic(m) for m in self.vit.children() if m is not head)
        )

    def _find_trunk_slots(self) -> list[tuple[dict, str]]:
        """Where every tensor before the classifier lives: (its module's parameter or buffer dict, its name)."""
        head = self.vit.get_classifier()
        tables = [t for m in self.vit.modules() if m is not head for t in (m._parameters, m._buffers)]
        return [(table, name) for table in tables for name, t in table.items() if t is not None]

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> the features (B, C) the classifier reads, as timm's forward computes them."""
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    def _trunk_tensors(self) -> list[torch.Tensor]:
        """Every tensor `_trunk` reads besides its input."""
        return [table[name] for table, name in self._trunk_slots]

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

    def tokens_before(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """x: (B, 3, H, W) -> the tokens (B, N, C) entering block `block` (patch and position embedding, then
        blocks [0, block)), as timm computes them. With a frozen prefix they are the same in every epoch, so
        a caller may compute them once and pass them to `forward(..., start=block)`."""
        v = self.vit
        h = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
        for b in v.blocks[:block]:
            h = b(h)
        return h

    def _logits(self, x: torch.Tensor, start: int, replay: bool = True) -> torch.Tensor:
        """timm's forward from images (start 0), or from the tokens entering block `start`; replay: the
        trunk's CUDA graphs may serve it (not while maps are recorded: a graph records none)."""
        if start == 0:
            if replay and self.trunk_graphs is not None:
                features = self.trunk_graphs(self._trunk, x, self._trunk_tensors())
                return self.vit.get_classifier()(features)
            return self.vit(x)
        v = self.vit
        for b in v.blocks[start:]:
            x = b(x)
        return v.forward_head(v.norm(x))

    def forward(
        self,
        x: torch.Tensor,
        request: MapRequest | None = None,
        layers: tuple[int, ...] | None = None,
        start: int = 0,
    ) -> torch.Tensor | InteractionOutput:
        """x: (B, 3, H, W), or with start > 0 the tokens (B, N, C) from `tokens_before(images, start)`.
        Returns logits (B, K), or InteractionOutput when `request` is given."""
        if request is None:
            return self._logits(x, start)
        with self.requesting(request, layers) as chosen:
            logits = self._logits(x, start, replay=False)
            return InteractionOutput(logits, layer_maps(chosen))

    def forward_aligned(
        self, x: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One pass -> logits (B, K) and the supervised map of each alignment layer as {layer: (B, gh, gw)}.

        The student side of Eq. 14: class-token row of C_AGT (or C_VFM for constraint='original') over the
        patch tokens, mean over heads. Empty dict when the config has no constraint or no alignment layers.
        x and start as in `forward` (tokens are on the patch grid of the model's own image size).
        """
        request = self.alignment_request()
        if request is None or not self.align_layers:
            return self._logits(x, start), {}
        # through forward, the one entry point: start only when given, so a forward(x, request, layers) override
        # (a wrapper, a test's stub) still serves images
        layers = self.align_layers
        out = self(x, request, layers=layers, start=start) if start else self(x, request, layers=layers)
        grid = self.patch_grid(tuple(x.shape[-2:])) if start == 0 else tuple(self.vit.patch_embed.grid_size)
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
