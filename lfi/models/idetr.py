"""I-DETR: interaction attention in the transformer encoder of Hugging Face DETR models (paper Sec. 5.3).

`interactionize_detr(model, config)` converts a `DetrForObjectDetection`, `DetrForSegmentation` or
`ConditionalDetrForObjectDetection` (random init or a user's weights) into an `InteractionDETR`. The
self-attention of the chosen encoder layers is replaced by `DetrInteractionAttention`, which takes over the
layer's own q/k/v/o projections, adds one query projection P'_q (a copy of q_proj) and a gated control
network, and calls `lfi.models.interaction_attention` (the only place holding Eq. 3-9). Freshly converted,
the model computes what the original computed. The decoder and heads are untouched.

Encoder tokens are the cells of the backbone's last feature map (stride 32 for ResNets), row-major; the
padding of a batch (pixel_mask = 0) is masked out of the keys exactly as HF masks it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from lfi.models.backends import Backend
from lfi.models.interaction import InteractionLayer, InteractionModel, layer_maps
from lfi.models.interaction_attention import MapRequest
from lfi.models.switches import InteractionSwitches

#: Parameter-name parts of the task heads of the supported HF models (kept trainable by freeze_backbone).
HEAD_NAMES = ("class_labels_classifier", "bbox_predictor", "mask_head", "bbox_attention")


@dataclass(frozen=True)
class IDETRConfig(InteractionSwitches):
    """How a DETR is converted: the switches of `InteractionSwitches` (as for `lfi.models.IViTConfig`; layers
    are encoder layers; interaction_queries off keeps a layer plain, C_F = C_VFM, for ablations), with
    everything trained by default (Table 7 trains from scratch; freeze_backbone=True fine-tunes a trained
    DETR as paper 5.1.2 does)."""


class DetrInteractionAttention(InteractionLayer):
    """Drop-in for HF `DetrSelfAttention` / `ConditionalDetrSelfAttention` computing interaction attention.

    As in HF, position embeddings are added to the input of the queries and keys, not of the values; the
    interaction queries read the same position-augmented input as the original queries (P'_q starts as a
    copy of q_proj). Same parameter names as HF for the original projections, so state dicts still load.
    P'_q, the gate and the backend are `InteractionLayer`'s.
    """

    def __init__(
        self,
        attn: nn.Module,
        interaction_queries: bool,
        gated_control: bool,
        gate_hidden: int,
        backend: Backend | None = None,
    ):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"):
            if not hasattr(attn, name):
                raise TypeError(
                    f"{type(attn).__name__} has no '{name}': expected an HF DETR self-attention with "
                    "q_proj/k_proj/v_proj/o_proj (transformers >= 5)"
                )
        num_heads = attn.q_proj.out_features // attn.head_dim
        super().__init__(attn.q_proj, num_heads, attn.head_dim, interaction_queries, gated_control, gate_hidden,
                         backend)  # fmt: skip
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
        )
        self.scaling = attn.scaling
        self.attention_dropout = float(getattr(attn, "attention_dropout", 0.0))

    @staticmethod
    def _key_mask(attention_mask: Any) -> torch.Tensor | None:
        """HF's encoder mask -> a bool key mask (B, 1, 1, N), True on the image's real tokens.

        The encoder's mask is a padding mask: HF builds it from pixel_mask, masking the same keys for every
        query, as (B, 1, N, N) (eager: additive, the dtype's lowest value on padding; sdpa: bool) or as a 2-D
        (B, N) (1 = real token, as flash-attention implementations receive it). One row of it is the key mask,
        which the kernels take and from which the gate counts each image's real keys (`gate_values`).
        """
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"encoder attention mask of type {type(attention_mask).__name__} is not supported by interaction "
                "attention; load the model with attn_implementation='sdpa' or 'eager'"
            )
        if attention_mask.dim() == 2:
            return attention_mask.bool()[:, None, None, :]
        if attention_mask.dim() == 4:
            row = attention_mask[:, :, :1]
            return row if row.dtype == torch.bool else row != torch.finfo(row.dtype).min
        raise ValueError(
            f"encoder attention mask: expected (B, N) or (B, 1, N, N), got {tuple(attention_mask.shape)}"
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        """hidden_states, position_embeddings: (B, N, C) -> ((B, N, C), None). Maps land in `self.maps`."""
        qk_input = hidden_states if position_embeddings is None else hidden_states + position_embeddings
        q = self._heads(self.q_proj(qk_input))
        k = self._heads(self.k_proj(qk_input))
        v = self._heads(self.v_proj(hidden_states))
        q_int = self._heads(self.iq(qk_input)) if self.iq is not None else None
        mask = self._key_mask(attention_mask)
        out = self.attend(q, k, v, self.scaling, q_int, mask, self.attention_dropout)
        out = out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        # None in place of HF's attention weights: the maps are read through `request`, not output_attentions.
        return self.o_proj(out), None


class IDETROutput(NamedTuple):
    """outputs: the HF model's output (logits, pred_boxes, pred_masks, loss, ...).

    maps: {layer: {map name: (B, H, R, N)}} of the request; N = gh * gw encoder tokens, row-major.
    grid_mask: (B, gh, gw) bool, True on tokens over real image (False on batch padding), as HF computes it.
    """

    outputs: Any
    maps: dict[int, dict[str, torch.Tensor]]
    grid_mask: torch.Tensor


def detr_core(model: nn.Module) -> nn.Module:
    """The DetrModel / ConditionalDetrModel inside a task model: the module holding backbone and encoder."""
    for module in model.modules():
        if hasattr(module, "backbone") and hasattr(getattr(module, "encoder", None), "layers"):
            return module
    raise TypeError(
        f"{type(model).__name__}: no submodule with a 'backbone' and an 'encoder.layers'; expected an HF "
        "DetrForObjectDetection, DetrForSegmentation or ConditionalDetrForObjectDetection"
    )


class InteractionDETR(InteractionModel):
    """An HF DETR with interaction attention in the chosen encoder layers. `self.detr` is the HF model.

    forward(**hf_inputs) -> the HF output, exactly as the HF model (loss when `labels` are given).
    forward(..., request=MapRequest) -> IDETROutput with the encoder maps of that single pass.
    """

    attention_attr = "self_attn"

    def __init__(self, detr: nn.Module, config: IDETRConfig) -> None:
        super().__init__()
        self.detr, self.config = detr, config
        # Not a registered submodule: it lives inside self.detr, and registering it twice would write every
        # weight twice into the state dict (safetensors refuses shared tensors).
        self.__dict__["_core"] = detr_core(detr)
        self.convert(DetrInteractionAttention)
        self._grid_mask: torch.Tensor | None = None
        self.core.backbone.register_forward_hook(self._record_grid_mask)
        if config.freeze_backbone:
            self._freeze_backbone()

    @property
    def core(self) -> nn.Module:
        """The DetrModel / ConditionalDetrModel inside `self.detr` (backbone, encoder, decoder)."""
        return self.__dict__["_core"]

    def host_layers(self) -> nn.ModuleList:
        return self.core.encoder.layers

    def _record_grid_mask(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """Backbone hook: the last feature map's mask (B, gh, gw), the one the encoder's tokens come from."""
        self._grid_mask = output[-1][1]

    def _freeze_backbone(self) -> None:
        if not self.config.interaction_queries:
            raise ValueError(
                "freeze_backbone=True without interaction queries leaves only the heads to train"
            )
        for name, p in self.detr.named_parameters():
            p.requires_grad_(any(part in name for part in HEAD_NAMES))
        for p in self.interaction_parameters():
            p.requires_grad_(True)

    def alignment_request(self) -> MapRequest | None:
        """Full maps of the supervised map: dense alignment averages query rows chosen per image."""
        name = self.config.supervised_map
        return None if name is None else MapRequest.of(name)

    def forward(
        self,
        *args: Any,
        request: MapRequest | None = None,
        layers: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> Any:
        """HF inputs (pixel_values (B, 3, H, W), pixel_mask (B, H, W), labels, ...) -> HF output, or
        IDETROutput with the maps of `request` from `layers` (default: all converted layers)."""
        if request is None:
            return self.detr(*args, **kwargs)
        try:
            with self.requesting(request, layers) as chosen:
                outputs = self.detr(*args, **kwargs)
                if self._grid_mask is None:
                    raise RuntimeError(
                        "maps need the backbone's feature mask; pass pixel_values, not inputs_embeds"
                    )
                return IDETROutput(outputs, layer_maps(chosen), self._grid_mask)
        finally:
            self._grid_mask = None

    def forward_aligned(self, **kwargs: Any) -> IDETROutput:
        """One pass -> IDETROutput with the supervised map of each alignment layer (empty without constraint)."""
        request = self.alignment_request()
        if request is None:
            return IDETROutput(self.detr(**kwargs), {}, self._take_grid_mask())
        return self(request=request, layers=self.align_layers, **kwargs)

    def _take_grid_mask(self) -> torch.Tensor:
        mask, self._grid_mask = self._grid_mask, None
        return mask


def interactionize_detr(
    model: nn.Module, config: IDETRConfig | None = None, inplace: bool = False, **overrides: Any
) -> InteractionDETR:
    """Convert an HF DETR / Conditional DETR (detection or segmentation) into an I-DETR.

    Keyword overrides update `config` (see IDETRConfig).

    >>> idetr = interactionize_detr(DetrForObjectDetection(DetrConfig()), freeze_backbone=False)
    """
    config = replace(config or IDETRConfig(), **overrides)
    return InteractionDETR(model if inplace else copy.deepcopy(model), config)
