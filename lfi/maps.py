"""Operations on interaction maps shared by every stage (extract, train, evaluate, show).

An interaction map is a non-negative float tensor over a spatial grid, shape (..., h, w), that sums to 1
over its last two dimensions (a probability distribution over image locations), or is all zeros when the
teacher found no foreground (such maps are *invalid* and are masked out of the alignment loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """L1-normalise over the last two dims. An all-zero map stays all-zero (never NaN).

    m: (..., h, w), non-negative.
    """
    total = m.sum(dim=(-2, -1), keepdim=True)
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def contrast_map(fore: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 11/12: C_VLM = relu(C_fore - C_back) / ||relu(C_fore - C_back)||_1.

    fore, back: (..., h, w). For dense prediction pass fore = sum_k C_obj^(k).
    Returns (..., h, w); all zeros where the difference is nowhere positive (see `is_valid_map`).
    """
    return normalize_map(torch.relu(fore - back))


def is_valid_map(m: torch.Tensor) -> torch.Tensor:
    """(..., h, w) -> (...,) bool: True where the map has any mass."""
    return m.sum(dim=(-2, -1)) > 0


def resample_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample maps to a grid of `size` = (h, w), keeping them distributions.

    Down-sampling uses area averaging (each output cell gets the mass of the input cells it covers),
    up-sampling bilinear interpolation; the result is re-normalised. m: (..., h, w) -> (..., *size).
    """
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    lead = m.shape[:-2]
    flat = m.reshape(-1, 1, *m.shape[-2:]).float()
    shrinking = size[0] <= m.shape[-2] and size[1] <= m.shape[-1]
    if shrinking:
        out = F.interpolate(flat, size=size, mode="area")
    else:
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False).clamp_min(0)
    return normalize_map(out.reshape(*lead, *size)).to(m.dtype)


def crop_to_grid(maps: torch.Tensor, boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Teacher maps -> the student's grid, resampled once: the part of each map under a box, by exact area
    averaging (each map cell is constant over its area), re-normalised. The one road of both data paths
    (`lfi.data.transforms` on the CPU, `lfi.data.gpu` on the device) and of dense alignment.

    maps: (B, h, w) non-negative, each over its whole image; boxes: (B, 4) x0, y0, x1, y1 in map cells
    (fractional) of the region the grid spans, e.g. an augmentation's crop; x0 > x1 (y0 > y1) mirrors it (a
    flipped crop). Outside the map there is no mass (padding). Returns (B, *grid), float32; all zeros where
    the box holds no mass.
    """
    rows = _cell_overlaps(boxes[:, 1], boxes[:, 3], grid[0], maps.shape[-2])  # (B, gh, h)
    cols = _cell_overlaps(boxes[:, 0], boxes[:, 2], grid[1], maps.shape[-1])  # (B, gw, w)
    return normalize_map(rows @ maps.float() @ cols.transpose(1, 2))


def _cell_overlaps(lo: torch.Tensor, hi: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """(B,) interval ends -> (B, n_out, n_in): the length of output cell i (the interval lo..hi split in n_out,
    reversed where hi < lo) inside map cell [j, j + 1]."""
    t = torch.linspace(0, 1, n_out + 1, device=lo.device)
    edges = lo.float()[:, None] + (hi - lo).float()[:, None] * t  # (B, n_out + 1)
    start = torch.minimum(edges[:, :-1], edges[:, 1:])[..., None]
    end = torch.maximum(edges[:, :-1], edges[:, 1:])[..., None]
    cells = torch.arange(n_in, device=lo.device, dtype=torch.float32)
    return (torch.minimum(end, cells + 1) - torch.maximum(start, cells)).clamp_min(0)


def attention_to_grid(
    rows: torch.Tensor,
    num_prefix_tokens: int,
    grid: tuple[int, int],
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention rows over tokens -> a map over the patch grid: the student side of the alignment loss, for
    I-ViT (class-token row), I-DETR (encoder rows), the figures and the human-alignment metrics alike.

    rows: (..., H, R, N) attention of R query rows over N = prefix + gh*gw keys, e.g. (B, H, 1, N) for the
        class-token row, (B, H, N, N) for full maps, or (L, B, H, R, N) for L layers at once. With full maps
        (R = N) the prefix query rows are dropped.
    row_weights: (..., R) non-negative weights of the query rows (e.g. I-DETR's real, non-padding tokens),
        broadcast over the leading dims; None = the plain mean over rows.
    Heads are averaged, prefix keys (class, register tokens) dropped and the result re-normalised over the
    patches. Returns (..., gh, gw); zero where keys carried no attention (padding).
    """
    n_patches = grid[0] * grid[1]
    if rows.shape[-1] != num_prefix_tokens + n_patches:
        raise ValueError(
            f"attention over {rows.shape[-1]} tokens does not match {num_prefix_tokens} prefix tokens + a "
            f"{grid[0]}x{grid[1]} patch grid"
        )
    if rows.shape[-2] == rows.shape[-1]:  # full maps: the patch queries only
        rows = rows[..., num_prefix_tokens:, :]
        if row_weights is not None:
            row_weights = row_weights[..., num_prefix_tokens:]
    heads = rows.float().mean(dim=-3)  # (..., R, N)
    if row_weights is None:
        keys = heads.mean(dim=-2)
    else:
        w = row_weights.float()
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        keys = (heads * w.unsqueeze(-1)).sum(dim=-2)
    patches = keys[..., num_prefix_tokens:]
    return normalize_map(patches.reshape(*patches.shape[:-1], *grid))


def centre_bias(size: tuple[int, int], sigma: float = 0.25) -> torch.Tensor:
    """A centred Gaussian on an (h, w) grid over the whole image, L1-normalised, float32: the centre-bias
    baseline of saliency benchmarks and the `centre` control of training (`lfi.data.controls`). sigma: a
    fraction of each side (so the blob is stretched to the image's aspect, as Judd et al.'s centre prior);
    cell centres sit at ((i + 0.5) / h, (j + 0.5) / w)."""
    h, w = size
    y = ((torch.arange(h, dtype=torch.float64) + 0.5) / h - 0.5) / sigma
    x = ((torch.arange(w, dtype=torch.float64) + 0.5) / w - 0.5) / sigma
    g = torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
    return (g / g.sum()).float()
