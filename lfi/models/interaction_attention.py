"""The math of interaction attention (paper Eq. 3-9) in one function, the reference implementation.

Every model in lfi (I-ViT blocks, the I-DETR encoder) computes C_VFM, C_AGT and C_F through
`interaction_attention` or through the fused GPU kernels of lfi.models.kernels, which have its exact signature
and are checked against it. This module does not know the kernels: the layers pick one or the other when they
are built (lfi.models.backends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

MAP_NAMES = ("vfm", "agt", "fused")


@dataclass(frozen=True)
class MapRequest:
    """Which attention maps a forward pass should hand back, and how much of them.

    names: subset of {"vfm", "agt", "fused"} (C_VFM, C_AGT, C_F).
    rows: None for full maps (B, H, N, N); k for only the first k query rows (B, H, k, N), e.g. k=1 for the
        class-token row that the alignment loss reads. Rows alone are cheap even where full maps are not.
    """

    names: frozenset[str]
    rows: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(MAP_NAMES)
        if unknown:
            raise ValueError(
                f"MapRequest.names: unknown map(s) {sorted(unknown)}; expected a subset of {MAP_NAMES}"
            )
        if self.rows is not None and self.rows < 1:
            raise ValueError(f"MapRequest.rows must be None or >= 1, got {self.rows}")

    @classmethod
    def of(cls, *names: str, rows: int | None = None) -> MapRequest:
        return cls(frozenset(names), rows)


class GateWeights(NamedTuple):
    """Parameters of the gated control network's FFN (Eq. 5), applied at every query-key pair.

    w1: (E, 2H), b1: (E,), w2: (2H, E), b2: (2H,), with H heads and hidden width E. The per-pair linear gate
    (no hidden layer) has w1: (2H, 2H), b1: (2H,) and w2 = b2 = None.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor | None
    b2: torch.Tensor | None


def attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float, attn_mask: torch.Tensor | None):
    """(B, H, M, d) x (B, H, N, d) -> (B, H, M, N) scaled scores, mask added (bool: True = attend)."""
    logits = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is None:
        return logits
    if attn_mask.dtype == torch.bool:
        return logits.masked_fill(~attn_mask, float("-inf"))
    return logits + attn_mask


def attention_rows(
    queries: dict[str, torch.Tensor],
    k: torch.Tensor,
    scale: float,
    rows: int | None,
    attn_mask: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """softmax(q[:, :, :rows] k^T * scale) of several query sets: {name: q (B, H, N, d)} -> {name: (B, H, R, N)}.

    One product for all sets: k is usually a strided view into the fused qkv projection, which a product with
    it copies whole (and its gradient back), so separate products would pay that once per set.
    attn_mask: broadcastable to (B, H, N, N), as `attention_logits` takes it.
    """
    heads = [q[:, :, :rows] for q in queries.values()]
    mask = attn_mask
    if mask is not None:
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        if mask.shape[-2] != 1:  # the mask varies over queries: its rows follow the stacked query rows
            mask = mask[:, :, :rows].repeat(1, 1, len(heads), 1)
    probs = torch.softmax(attention_logits(torch.cat(heads, dim=2), k, scale, mask), dim=-1)
    return dict(zip(queries, probs.split(heads[0].shape[2], dim=2), strict=True))


def key_counts(attn_mask: torch.Tensor | None, keys: int) -> int | torch.Tensor:
    """How many keys each query row attends: `keys` without a mask, else the row's unmasked keys.

    attn_mask: broadcastable to (B, H, M, N), bool (True = attend) or additive (-inf = masked). Returns an int,
    or a float32 tensor of shape (b, h, m, 1) (b, h, m: the mask's sizes, each 1 or B, H, M), at least 1.
    """
    if attn_mask is None:
        return keys
    mask = attn_mask.reshape((1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape))
    attended = mask if mask.dtype == torch.bool else mask > float("-inf")
    return attended.expand(*mask.shape[:-1], keys).sum(-1, keepdim=True, dtype=torch.float32).clamp_min(1)


def gate_values(
    c_agt: torch.Tensor, c_vfm: torch.Tensor, gate: GateWeights, keys: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: [g1, g2] = sigmoid(FFN([C_AGT; C_VFM])), one FFN evaluation per query-key pair.

    Reading of Eq. 5 implemented here: the concatenation is along the head axis, and the FFN runs pointwise
    over (i, j): its input is the 2H values C_AGT[h, i, j], C_VFM[h, i, j] of all heads, its output the 2H
    gates g1[h, i, j], g2[h, i, j]. Why: Eq. 6 multiplies the gates element-wise with maps of C's shape, so
    the gate must give one value per head and pair; an FFN across the key axis would tie the network to one
    token count (DETR's varies with the image), while mixing heads lets one head's evidence gate another.

    The maps are multiplied by the number of keys their row attends before the FFN, so that a uniform row
    reads 1 whatever that number is (probabilities ~1/N would otherwise leave the FFN's input near zero and
    the gate near-constant). This is a fixed rescaling of the first layer's weights and does not change the
    function class. Under a padding mask the count is the image's real keys, not the padded batch's: an
    image's gate, and so its output, does not depend on the other images of its batch.

    c_agt, c_vfm: (B, H, M, N); keys: the key count of each row, an int or broadcastable to (B, H, M, 1)
    (`key_counts`), default N. -> g1, g2: (B, H, M, N), each in (0, 1).
    """
    heads = c_agt.shape[1]
    keys = c_agt.shape[-1] if keys is None else keys
    if isinstance(keys, torch.Tensor):
        keys = keys.to(c_agt.dtype)
    x = torch.cat([c_agt * keys, c_vfm * keys], dim=1).movedim(1, -1)  # (B, M, N, 2H)
    z = F.linear(x, gate.w1, gate.b1)
    if gate.w2 is not None:  # the FFN; without it the per-pair linear gate
        z = F.linear(F.gelu(z), gate.w2, gate.b2)
    g = torch.sigmoid(z).movedim(-1, 1)
    return g[:, :heads], g[:, heads:]


def interaction_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    q_int: torch.Tensor | None = None,
    gate: GateWeights | None = None,
    request: MapRequest | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Interaction attention, paper Eq. 3-9.

    This is the reference implementation. `lfi.models.kernels.fused_interaction_attention` computes the same
    (tests/kernels) in ~0.3x the memory and ~0.6x the time per I-ViT train step on a GPU (benchmarks/README.md);
    which of the two a layer runs is decided when it is built (lfi.models.backends, LFI_ATTENTION).

    C_VFM = softmax(q k^T * scale)                    (Eq. 3, original queries)
    C_AGT = softmax(q_int k^T * scale)                (Eq. 4, interaction queries)
    C_F   = g1 * C_AGT + g2 * C_VFM                   (Eq. 5-6, gates from `gate`, see `gate_values`;
                                                       g1 = g2 = 1/2 when None)
    out   = C_F v                                     (Eq. 8-9; the block's projection + MLP follow outside)

    q, k, v, q_int: (B, H, N, d). Without q_int the layer is plain attention (C_F = C_VFM) and runs through
    PyTorch's fused SDPA; without a gate (and without dropout) C_F V = (C_AGT V + C_VFM V) / 2 runs as two SDPA
    calls. attn_mask: broadcastable to (B, H, N, N), bool (True = attend) or additive (-inf = masked, which is
    what the gate's key count reads, see `key_counts`). dropout_p: dropout on C_F (timm's attn_drop), only pass it while training.

    Returns out (B, H, N, d) and the requested maps {name: (B, H, R, N)} (R = N or request.rows), nothing else.
    """
    names = request.names if request is not None else frozenset()
    rows = request.rows if request is not None else None
    if gate is not None and q_int is None:
        raise ValueError(
            "the gated control network needs interaction queries (q_int); got gate without q_int"
        )

    if q_int is None:
        return _plain_attention(q, k, v, scale, names, rows, attn_mask, dropout_p)
    if gate is None and dropout_p == 0:
        return _ungated_attention(q, k, v, scale, q_int, names, rows, attn_mask)
    c_vfm = torch.softmax(attention_logits(q, k, scale, attn_mask), dim=-1)
    c_agt = torch.softmax(attention_logits(q_int, k, scale, attn_mask), dim=-1)
    if gate is None:
        c_f = 0.5 * (c_agt + c_vfm)
    else:
        g1, g2 = gate_values(c_agt, c_vfm, gate, key_counts(attn_mask, k.shape[2]))
        c_f = g1 * c_agt + g2 * c_vfm
    out = F.dropout(c_f, dropout_p) @ v if dropout_p > 0 else c_f @ v
    full = {"vfm": c_vfm, "agt": c_agt, "fused": c_f}
    return out, {name: _take_rows(full[name], rows) for name in names}


def _plain_attention(q, k, v, scale, names, rows, attn_mask, dropout_p):
    """C_F = C_VFM. Fused SDPA for the output; maps (only C_VFM exists) computed only when asked."""
    if names - {"vfm"}:
        raise ValueError(f"maps {sorted(names - {'vfm'})} need interaction queries, which this layer has not")
    if names and rows is None:  # full map asked for: materialise it once and reuse it for the output
        c_vfm = torch.softmax(attention_logits(q, k, scale, attn_mask), dim=-1)
        out = F.dropout(c_vfm, dropout_p) @ v if dropout_p > 0 else c_vfm @ v
        return out, {"vfm": c_vfm}
    mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out, attention_rows({"vfm": q}, k, scale, rows, attn_mask) if names else {}


def _ungated_attention(q, k, v, scale, q_int, names, rows, attn_mask):
    """No gate: C_F V = (C_AGT V + C_VFM V) / 2 exactly, so two fused SDPA calls give the output (any device,
    no N x N tensor); maps from `interaction_maps`. Dropout on C_F is not the average of two dropouts: that
    case stays on the general path."""
    out_agt, _ = _plain_attention(q_int, k, v, scale, frozenset(), None, attn_mask, 0.0)
    out_vfm, _ = _plain_attention(q, k, v, scale, frozenset(), None, attn_mask, 0.0)
    return 0.5 * (out_agt + out_vfm), interaction_maps(names, q, q_int, k, scale, rows, attn_mask, None)


def interaction_maps(
    names: frozenset[str],
    q: torch.Tensor,
    q_int: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    rows: int | None,
    attn_mask: torch.Tensor | None,
    gate: GateWeights | None,
) -> dict[str, torch.Tensor]:
    """The requested maps ("vfm", "agt", "fused"), their first `rows` query rows, apart from the output.

    For the paths whose output never forms the maps (SDPA, the fused kernels). Only the softmaxes the names
    need are computed, in one product (`attention_rows`). -> {name: (B, H, R, N)}.
    """
    if not names:
        return {}
    needed = {name: t for name, t in (("vfm", q), ("agt", q_int)) if name in names or "fused" in names}
    maps = attention_rows(needed, k, scale, rows, attn_mask)
    if "fused" in names:
        g1, g2 = 0.5, 0.5
        if gate is not None:
            keys = key_counts(attn_mask, k.shape[2])
            if isinstance(keys, torch.Tensor) and keys.shape[2] != 1:  # a mask that varies over queries
                keys = keys[:, :, :rows]
            g1, g2 = gate_values(maps["agt"], maps["vfm"], gate, keys)
        maps["fused"] = g1 * maps["agt"] + g2 * maps["vfm"]
    return {name: maps[name] for name in names}


def _take_rows(m: torch.Tensor, rows: int | None) -> torch.Tensor:
    return m if rows is None else m[:, :, :rows]
