"""Dense alignment for I-DETR (paper Eq. 12-14 on the encoder's feature grid).

The teacher's dense C_VLM of each image (Eq. 12, e.g. the oracle teacher from boxes or masks, or a VLM with
boxes as visual prompts) covers that image only. In a padded batch the image occupies the top-left
(hv, wv) cells of the encoder's (gh, gw) grid (HF pads bottom/right, and computes the grid mask from the
pixel mask); the map is resampled into that valid region only and is zero over the padding.

The student side is the supervised encoder map (C_AGT, or C_VFM for constraint='original'), a (B, H, N, N)
attention over N = gh * gw tokens: its query rows are averaged (and its heads) into one distribution over
the keys, which the KL of `lfi.train.losses.AlignmentLoss` compares with the teacher's. Which rows:

rows="all" (default): every real (non-padding) token's row, equally weighted. The encoder as a whole should
    look where the teacher looks: the detector's analogue of the class-token row that I-ViT supervises.
rows="objects": only the rows of tokens inside objects (teacher mass > 0): the objects' own tokens should
    attend to the objects, background tokens are free to gather context. Falls back to all real tokens
    for an image whose map has no mass on the grid (then the loss masks it anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lfi.maps import normalize_map, resample_map
from lfi.train.losses import AlignmentLoss

Rows = Literal["all", "objects"]


def valid_region(grid_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(B, gh, gw) bool -> [(hv, wv)] per image: the size of its top-left valid rectangle.

    Raises if an image's valid cells are not a top-left rectangle (padding must be bottom/right).
    """
    sizes = []
    for b, m in enumerate(grid_mask.bool()):
        hv, wv = int(m.any(1).sum()), int(m.any(0).sum())
        if int(m.sum()) != hv * wv or not bool(m[:hv, :wv].all()):
            raise ValueError(
                f"grid_mask[{b}]: valid cells are not a top-left rectangle (pad bottom/right only)"
            )
        sizes.append((hv, wv))
    return sizes


def teacher_on_grid(teachers: Sequence[torch.Tensor], grid_mask: torch.Tensor) -> torch.Tensor:
    """Per-image teacher maps (h_i, w_i) (any size, each over its whole image) -> (B, gh, gw) on the grid.

    Each map is resampled (`lfi.maps.resample_map`: area down, bilinear up) into its image's valid region
    and zero elsewhere; all-zero (invalid) maps stay all zero.
    """
    if len(teachers) != grid_mask.shape[0]:
        raise ValueError(f"teacher maps: got {len(teachers)} for a batch of {grid_mask.shape[0]} images")
    out = torch.zeros(grid_mask.shape, dtype=torch.float32, device=grid_mask.device)
    for b, (t, (hv, wv)) in enumerate(zip(teachers, valid_region(grid_mask), strict=True)):
        if t.dim() != 2:
            raise ValueError(f"teacher map {b}: expected (h, w), got shape {tuple(t.shape)}")
        if hv and wv:
            out[b, :hv, :wv] = resample_map(t.float().to(out.device).clamp_min(0), (hv, wv))
    return out


def student_on_grid(attn: torch.Tensor, row_weights: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Encoder attention (B, H, N, N) and query-row weights (B, N) -> (B, gh, gw) distribution over keys.

    Heads are averaged, rows weighted by `row_weights` (normalised here). Masked (padding) keys carry no
    attention, so the result is zero over the padding.
    """
    w = row_weights.float() / row_weights.float().sum(1, keepdim=True).clamp_min(1e-12)
    keys = torch.einsum("bhqk,bq->bk", attn.float(), w) / attn.shape[1]
    return normalize_map(keys.reshape(-1, *grid))


class DenseAlignment(nn.Module):
    """L_align of I-DETR: mean over alignment layers of AlignmentLoss(student grid map, teacher grid map).

    rows: which query rows are supervised ("all" or "objects", see the module docstring).
    alignment: the KL (default: AlignmentLoss(), D_KL(C_VLM || student)).
    """

    def __init__(self, rows: Rows = "all", alignment: AlignmentLoss | None = None) -> None:
        super().__init__()
        if rows not in ("all", "objects"):
            raise ValueError(f"rows must be 'all' or 'objects', got {rows!r}")
        self.rows = rows
        self.alignment = alignment or AlignmentLoss()

    def row_weights(self, grid_mask: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw) mask and teacher grid maps -> (B, N) weights of the supervised query rows."""
        valid = grid_mask.flatten(1).float()
        if self.rows == "all":
            return valid
        inside = (teacher.flatten(1) > 0).float() * valid
        return torch.where(inside.sum(1, keepdim=True) > 0, inside, valid)

    def forward(
        self, maps: dict[int, torch.Tensor], grid_mask: torch.Tensor, teachers: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """maps: {layer: (B, H, N, N)} supervised attention; grid_mask: (B, gh, gw) bool; teachers: B maps
        (h_i, w_i). Returns a scalar (zero with a graph when no teacher map is valid)."""
        if not maps:
            raise ValueError("DenseAlignment needs at least one layer's map (is the constraint 'none'?)")
        grid = tuple(grid_mask.shape[-2:])
        teacher = teacher_on_grid(teachers, grid_mask)
        weights = self.row_weights(grid_mask, teacher)
        students = torch.stack([student_on_grid(m, weights, grid) for m in maps.values()])  # (L, B, gh, gw)
        return self.alignment(students, teacher)
