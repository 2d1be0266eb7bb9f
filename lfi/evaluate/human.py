"""Human alignment of interaction maps (paper Sec. 5.2.3, Fig. 6): how close C_VFM, C_VLM, C_AGT, ... come to
human attention maps from eye fixations (e.g. `lfi.data.osie.OSIE`).

Metrics, per image, computed in float64:
- ``cosine``: cosine similarity of the two maps flattened (the paper's metric).
- ``cc``: Pearson correlation of the two maps (Bylinskii et al., "What do different evaluation metrics tell us
  about saliency models?", TPAMI 2019).
- ``nss``: normalised scanpath saliency, the mean of the standardised predicted map (zero mean, unit
  population std over its pixels) at the fixated locations (same reference).
Undefined cases give 0, never NaN: cosine with an all-zero map, CC or NSS with a constant map (a uniform
map carries no information about where people look, so it scores like chance). "Constant" allows float
rounding: a map whose std is below `CONSTANT_RTOL` of its peak.

Common grid (`resample`):
- ``"to_human"`` (default): model maps (h, w) on the patch grid are bilinearly upsampled to the human map's
  (H, W). The human map and the fixations stay exact, NSS is scored at the true fixated pixels, as
  the saliency benchmarks do with maps of any resolution.
- ``"to_model"``: the human map is area-downsampled to each model map's grid (mass-preserving), and each
  fixated pixel votes for the cell it falls in (NSS weights cells by their share of fixated pixels).
Either way a model map must cover the whole image (resize, no crop), so that its grid maps onto the image.

Ratios (the paper's "C_AGT is 2.7x closer to human attention than C_VFM"): mean score of one map over that of
another, undefined (NaN) when the denominator is <= 0, since "x times" a score at or below chance level means
nothing (`score_ratio`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lfi.maps import resample_map

Resample = Literal["to_human", "to_model"]
DEFAULT_RESAMPLE: Resample = "to_human"
METRICS = ("cosine", "cc", "nss")
CONSTANT_RTOL = 1e-6  # a map whose std is below this fraction of its peak is treated as constant
PAPER_RATIO = 2.7  # C_AGT / C_VFM cosine similarity to human maps reported in the paper (Fig. 6)


def score_ratio(num: float, den: float) -> float:
    """num / den, or NaN (undefined) when den <= 0: how many times higher a mean score is than another is
    only a number when the other is above zero (CC and NSS of a map can be negative, cosine can be 0)."""
    return num / den if den > 0 else math.nan


def _flat(m: torch.Tensor) -> torch.Tensor:
    return m.reshape(*m.shape[:-2], -1).double()


def _varies(p: torch.Tensor) -> torch.Tensor:
    """(..., n) -> (...,) bool: False for constant vectors. The tolerance is relative, so float32 rounding
    noise of a resampled uniform map (std ~1e-8 of its value) does not count as signal."""
    return p.std(-1, correction=0) > CONSTANT_RTOL * p.abs().amax(-1)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def _cosine(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Cosine over the last dim of (..., n) float64 vectors; 0 where either is all zeros."""
    return _safe_div((p * t).sum(-1), p.norm(dim=-1) * t.norm(dim=-1))


def cosine_similarity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., h, w), (..., h, w) -> (...,) float64 cosine similarity; 0 where either map is all zeros."""
    return _cosine(_flat(pred), _flat(target))


def pearson_cc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., h, w), (..., h, w) -> (...,) float64 Pearson correlation; 0 where either map is constant."""
    p, t = _flat(pred), _flat(target)
    cc = _cosine(p - p.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True))
    return torch.where(_varies(p) & _varies(t), cc, torch.zeros_like(cc))


def nss(pred: torch.Tensor, fixations: torch.Tensor) -> torch.Tensor:
    """Normalised scanpath saliency. pred (..., h, w); fixations (..., h, w) bool, or non-negative weights
    (fixation counts per cell). Returns (...,) float64: the fixation-weighted mean of (pred - mean) / std
    (population std over the map); 0 where pred is constant. Raises if a map has no fixation."""
    p, f = _flat(pred), _flat(fixations)
    if (f < 0).any():
        raise ValueError("nss: fixations must be a bool map or non-negative weights")
    weight = f.sum(-1)
    if (weight <= 0).any():
        empty = torch.nonzero(weight.reshape(-1) <= 0).flatten().tolist()
        raise ValueError(f"nss: fixation map(s) at flat index {empty} have no fixated location")
    z = (p - p.mean(-1, keepdim=True)) / p.std(-1, correction=0, keepdim=True).clamp_min(
        torch.finfo(p.dtype).tiny
    )
    return torch.where(_varies(p), (z * f).sum(-1) / weight, torch.zeros_like(weight))


def common_grid(
    pred: torch.Tensor, human: torch.Tensor, fixations: torch.Tensor, resample: Resample = DEFAULT_RESAMPLE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bring (N, h, w) model maps and (N, H, W) human maps + fixations onto one grid (see module doc).

    Returns (pred, human, fixations) on that grid; fixations become float weights under ``"to_model"``.
    """
    if resample == "to_human":
        return resample_map(pred.float(), tuple(human.shape[-2:])), human, fixations
    if resample == "to_model":
        size = tuple(pred.shape[-2:])
        votes = F.adaptive_avg_pool2d(fixations.float().unsqueeze(1), size).squeeze(1)
        return pred, resample_map(human.float(), size), votes
    raise ValueError(f"resample must be 'to_human' or 'to_model', got {resample!r}")


def score_maps(
    maps: Mapping[str, torch.Tensor],
    human: torch.Tensor,
    fixations: torch.Tensor,
    resample: Resample = DEFAULT_RESAMPLE,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image scores: {map name: {metric: (N,) float64}}.

    maps: name -> (N, h, w) non-negative maps over the whole image; human: (N, H, W);
    fixations: (N, H, W) bool.
    """
    if human.dim() != 3 or fixations.shape != human.shape:
        raise ValueError(
            f"human must be (N, H, W) and fixations the same shape, got {tuple(human.shape)} "
            f"and {tuple(fixations.shape)}"
        )
    scores: dict[str, dict[str, torch.Tensor]] = {}
    for name, pred in maps.items():
        if pred.dim() != 3 or pred.shape[0] != human.shape[0]:
            raise ValueError(f"map {name!r}: expected ({human.shape[0]}, h, w), got {tuple(pred.shape)}")
        p, h, f = common_grid(pred.detach().cpu(), human.cpu(), fixations.cpu(), resample)
        scores[name] = {"cosine": cosine_similarity(p, h), "cc": pearson_cc(p, h), "nss": nss(p, f)}
    return scores


@dataclass(frozen=True)
class AlignmentTable:
    """Per-image human-alignment scores {map name: {metric: (N,) float64}} and the grid policy used."""

    scores: dict[str, dict[str, torch.Tensor]]
    resample: str = DEFAULT_RESAMPLE

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{map name: {metric: (mean, std)}} over images; std is the sample std (0 for one image)."""
        out = {}
        for name, per_metric in self.scores.items():
            out[name] = {
                m: (v.mean().item(), v.std().item() if v.numel() > 1 else 0.0) for m, v in per_metric.items()
            }
        return out

    def ratio(self, num: str = "C_AGT", den: str = "C_VFM", metric: str = "cosine") -> float:
        """Mean `metric` of map `num` over that of `den` (paper: C_AGT / C_VFM cosine = 2.7x); NaN (undefined)
        when the mean of `den` is <= 0 (`score_ratio`)."""
        for name in (num, den):
            if name not in self.scores:
                raise KeyError(f"ratio: no map {name!r} in the table (have {sorted(self.scores)})")
        return score_ratio(self.scores[num][metric].mean().item(), self.scores[den][metric].mean().item())

    def to_markdown(self) -> str:
        """A Markdown table (mean ± std over images), then the C_AGT / C_VFM ratios when both maps exist."""
        summary = self.summary()
        n = {name: next(iter(v.values())).numel() for name, v in self.scores.items()}
        lines = [
            "| map | " + " | ".join(METRICS) + " | images |",
            "|---|" + "---|" * len(METRICS) + "---|",
        ]
        for name, stats in summary.items():
            cells = [f"{stats[m][0]:.4f} ± {stats[m][1]:.4f}" for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {n[name]} |")
        lines.append(f"\nGrid: {self.resample}.")
        if {"C_AGT", "C_VFM"} <= summary.keys():
            r = {m: self.ratio(metric=m) for m in METRICS}
            r = {m: "undefined (C_VFM's mean <= 0)" if math.isnan(v) else f"{v:.2f}x" for m, v in r.items()}
            lines.append(
                f"C_AGT / C_VFM: cosine {r['cosine']} (paper: {PAPER_RATIO}x), CC {r['cc']}, NSS {r['nss']}"
            )
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """One row per map: name, then mean and std of each metric, then the number of images."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["map", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "images"])
            for name, stats in self.summary().items():
                n = self.scores[name]["cosine"].numel()
                writer.writerow([name, *(f"{x:.6f}" for m in METRICS for x in stats[m]), n])
        return path

    @staticmethod
    def concat(tables: Iterable[AlignmentTable]) -> AlignmentTable:
        """Join tables over disjoint image sets (e.g. batches) that score the same maps."""
        tables = list(tables)
        if not tables:
            raise ValueError("concat: no tables")
        names = list(tables[0].scores)
        for t in tables:
            if list(t.scores) != names or t.resample != tables[0].resample:
                raise ValueError(
                    f"concat: tables differ in maps ({list(t.scores)} vs {names}) or grid policy"
                )
        scores = {n: {m: torch.cat([t.scores[n][m] for t in tables]) for m in METRICS} for n in names}
        return AlignmentTable(scores, tables[0].resample)

    def __str__(self) -> str:
        return self.to_markdown()


def compare_to_human(
    maps: Mapping[str, torch.Tensor],
    human: torch.Tensor,
    fixations: torch.Tensor,
    resample: Resample = DEFAULT_RESAMPLE,
) -> AlignmentTable:
    """Score named maps {name: (N, h, w)} against human maps (N, H, W) and fixations (N, H, W) bool."""
    return AlignmentTable(score_maps(maps, human, fixations, resample), resample)


def evaluate_human_alignment(
    dataset: Dataset | Sequence[Mapping[str, Any]],
    model_maps: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    batch_size: int = 8,
    resample: Resample = DEFAULT_RESAMPLE,
) -> AlignmentTable:
    """Score `model_maps(images)` on a human-attention dataset (`lfi.data.osie.OSIE`, a Subset, a list of samples).

    The dataset yields dicts with ``image`` uint8 (3, H, W), ``human_map`` (H, W), ``fixations`` (H, W) bool,
    all images of one size. model_maps: uint8 (B, 3, H, W) -> {name: (B, h, w)} maps over the whole image.
    Scores are computed batch by batch, so full-resolution human maps of the whole set are never held at once.
    """
    tables = []
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([s["image"] for s in batch])
        with torch.no_grad():
            maps = model_maps(images)
        human = torch.stack([s["human_map"] for s in batch])
        fixations = torch.stack([s["fixations"] for s in batch])
        tables.append(compare_to_human(maps, human, fixations, resample))
    return AlignmentTable.concat(tables)
