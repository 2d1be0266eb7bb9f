"""Capture a few rows of a few layers' attention while the model runs SDPA.

``output_attentions=True`` forces eager attention and materialises B*L*H*T^2 weights. Instead lfi registers
an attention function ("lfi_capture") with transformers' `AttentionInterface`: every layer runs SDPA for its
output as usual, and only the layers being captured additionally compute softmax(q k^T * scale + mask) for
the requested query rows (the answer-word tokens), keeping the columns of the image tokens:
(B, H_sel, R, N) per layer instead of (B, H, T, T).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CAPTURE_ATTENTION = "lfi_capture"
_ATTR = "_lfi_capture"


@dataclass
class _Request:
    rows: torch.Tensor  # (B, R) long: query positions to keep
    columns: torch.Tensor  # (B, N) long: key positions to keep (the image tokens)
    out: dict[int, torch.Tensor]


def _capture_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, plus the requested attention rows where `module` is being captured (see `AttentionCapture`)."""
    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    capture: AttentionCapture | None = getattr(module, _ATTR, None)
    if capture is not None and capture.request is not None:
        capture.record(module, query, key, attention_mask, kwargs.get("scaling"))
    return output, None


def register_capture_attention() -> str:
    """Register "lfi_capture" (idempotent) and return the name to pass as ``attn_implementation``.

    The mask function is SDPA's: masks reach the capture as SDPA gets them (None = plain causal, else a
    boolean (B, 1, T, S) "may attend" mask).
    """
    AttentionInterface.register(CAPTURE_ATTENTION, _capture_attention)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)
    return CAPTURE_ATTENTION


def language_model(model: nn.Module) -> nn.Module:
    """The decoder of a VLM: ``model.model.language_model`` (LLaVA, Qwen2-VL) or ``.text_model`` (Idefics3, SmolVLM)."""
    inner = getattr(model, "model", None)
    for name in ("language_model", "text_model"):
        if hasattr(getattr(inner, name, None), "layers"):
            return getattr(inner, name)
    raise TypeError(
        f"{type(model).__name__} has no model.language_model.layers nor model.text_model.layers: "
        "not a supported VLM"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers (see `language_model`)."""
    return language_model(model).layers


class AttentionCapture:
    """Keeps attention rows of the chosen decoder layers of a model whose attention is "lfi_capture".

    layers: decoder layer indices to capture. heads: head indices to keep (None: all heads).
    Use `capturing(rows, columns)` around one forward; it yields {layer: (B, H_sel, R, N) float32}.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], heads: Sequence[int] | None = None) -> None:
        if model.config.text_config._attn_implementation != CAPTURE_ATTENTION:
            raise ValueError(
                f"the language model's attention implementation must be {CAPTURE_ATTENTION!r} "
                f"(load with attn_implementation=register_capture_attention()), got "
                f"{model.config.text_config._attn_implementation!r}"
            )
        blocks = decoder_layers(model)
        if not layers or any(not 0 <= i < len(blocks) for i in layers):
            raise ValueError(f"layers must be non-empty indices in [0, {len(blocks)}), got {list(layers)}")
        n_heads = model.config.text_config.num_attention_heads
        if heads is not None and (not heads or any(not 0 <= h < n_heads for h in heads)):
            raise ValueError(f"heads must be None or non-empty indices in [0, {n_heads}), got {list(heads)}")
        self.layers = tuple(sorted(set(layers)))
        self.heads = None if heads is None else torch.tensor(sorted(set(heads)), dtype=torch.long)
        self.request: _Request | None = None
        for i in self.layers:
            setattr(blocks[i].self_attn, _ATTR, self)

    @contextmanager
    def capturing(self, rows: torch.Tensor, columns: torch.Tensor) -> Iterator[dict[int, torch.Tensor]]:
        """Capture during the enclosed forward. rows: (B, R), columns: (B, N) long token positions."""
        self.request = _Request(rows=rows, columns=columns, out={})
        try:
            yield self.request.out
        finally:
            self.request = None

    def record(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
    ) -> None:
        """Store softmax rows of one layer. query: (B, H, T, d); key: (B, H_kv, S, d) (H_kv divides H)."""
        req = self.request
        b, h, _, d = query.shape
        rows, cols = req.rows.to(query.device), req.columns.to(query.device)
        if self.heads is not None:
            heads = self.heads.to(query.device)
            query = query.index_select(1, heads)
            key = key.index_select(1, heads // (h // key.shape[1]))
        elif key.shape[1] != h:
            key = key.repeat_interleave(h // key.shape[1], dim=1)
        q = query.gather(2, rows[:, None, :, None].expand(b, query.shape[1], rows.shape[1], d))
        scores = torch.matmul(q, key.transpose(2, 3)) * (scaling if scaling is not None else d**-0.5)
        scores = scores.float()  # (B, H_sel, R, S); softmax in float32 as eager attention does
        if attention_mask is None:  # plain causal: row p sees keys 0..p
            keys = torch.arange(key.shape[2], device=query.device)
            allowed = (keys[None, None, :] <= rows[:, :, None])[:, None]
            scores = scores.masked_fill(~allowed, float("-inf"))
        else:
            full = attention_mask.expand(b, -1, -1, -1)
            mask = full.gather(2, rows[:, None, :, None].expand(b, full.shape[1], -1, full.shape[3]))
            scores = (
                scores.masked_fill(~mask, float("-inf"))
                if mask.dtype == torch.bool
                else scores + mask.float()
            )
        probs = scores.softmax(dim=-1)
        req.out[module.layer_idx] = probs.gather(
            3, cols[:, None, None, :].expand(*probs.shape[:3], cols.shape[1])
        )


@contextmanager
def layers_up_to(model: nn.Module, last: int) -> Iterator[None]:
    """Run only decoder layers 0..last inside the block: later layers cannot change earlier attention.

    Causal decoder layers feed forward only, so the attention of layer `last` is exact with the rest cut;
    it saves (L - 1 - last) / L of the language model's time (18/32 for layer 14 of LLaVA-1.5-7B).
    """
    lm = language_model(model)
    full = lm.layers
    lm.layers = nn.ModuleList(list(full)[: last + 1])
    try:
        yield
    finally:
        lm.layers = full
