"""Human alignment of interaction maps (paper Sec. 5.2.3, Fig. 6): how close C_VFM, C_VLM, C_AGT, ... come to
human attention maps from eye fixations (e.g. `lfi.data.osie.OSIE`).

Metrics, per image, computed in float64:
- ``cosine``: cosine similarity of the two maps flattened (the paper's metric).
- ``cc``: Pearson correlation of the two maps (Bylinskii et al., "What do different evaluation metrics tell us
  about saliency models?", TPAMI 2019).
- ``nss``: normalised scanpath saliency, the mean of the standardised predicted map (zero mean, unit
  population std over its pixels) at the fixated locations (same reference).
- ``auc_judd``: AUC-Judd of the MIT saliency benchmark (Judd et al. 2012; Bylinskii et al. 2019): the fixated
  locations are the positives, every other location a negative; thresholds are the map's values at the
  fixations only, each giving a point (share of negatives at or above it, share of fixations at or above
  it), joined by straight lines from (0, 0) to (1, 1) and integrated. Ties: the benchmark's code breaks them
  with random jitter; here, deterministically, the i-th of a fixations tied at one value counts
  i / (a + 1) of the b unfixated locations tied with them as above it (their expected share under random
  tie-breaking); without ties this is the benchmark's curve exactly. 1 = every fixation above every other
  location; a constant map scores 0.5 (chance). Because the curve goes straight from (0, 0) to its first
  point, a map whose k fixations all lie below every other location scores 1 / (2k), not 0 (e.g. the
  negation of a binary fixation map).
Undefined cases give chance, never NaN: 0 for cosine with an all-zero map, CC or NSS with a constant map (a
uniform map carries no information about where people look), 0.5 for AUC-Judd of a constant map or one with
no unfixated location. "Constant" allows float rounding: a map whose std is below `CONSTANT_RTOL` of its
peak.

Common grid (`resample`):
- ``"to_human"`` (default): model maps (h, w) on the patch grid are bilinearly upsampled to the human map's
  (H, W). The human map and the fixations stay exact, NSS is scored at the true fixated pixels, as
  the saliency benchmarks do with maps of any resolution.
- ``"to_model"``: the human map is area-downsampled to each model map's grid (mass-preserving), and each
  fixated pixel votes for the cell it falls in (NSS weights cells by their share of fixated pixels; for
  AUC-Judd a cell with votes is a positive of that weight, a cell without a negative).
Either way a model map must cover the whole image (resize, no crop), so that its grid maps onto the image.
Before either, `evaluate_many` can bring the human side down to a coarser scoring grid (`downsample_human`,
``eval_side``): the human map area-downsampled, each fixated pixel a vote for its cell (NSS and AUC-Judd weight
the cells by their votes, so every fixated pixel still counts once). Full resolution is exact but slow on a
CPU (800x600 px: ~0.5 s per map and image here); a longest side of 200 px is ~16x faster.

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
METRICS = ("cosine", "cc", "nss", "auc_judd")
RATIO_METRICS = ("cosine", "cc", "nss")  # AUC-Judd's chance is 0.5, so "x times" it means nothing
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


def _auc_judd_row(p: torch.Tensor, f: torch.Tensor) -> float:
    """AUC-Judd of one flat map `p` (n,) with fixation weights `f` (n,), positives where f > 0."""
    pos = f > 0
    order = torch.sort(p[pos], descending=True, stable=True)
    pv, pw = order.values, f[pos][order.indices]  # fixations, highest first
    k = pv.numel()
    starts = torch.ones(k, dtype=torch.bool)
    starts[1:] = pv[1:] != pv[:-1]
    group = starts.cumsum(0) - 1  # tie group of each fixation, highest value first
    first = torch.nonzero(starts).flatten()
    rank = torch.arange(k) - first[group] + 1  # 1.. within its group
    size = torch.bincount(group).double()
    levels = pv[first].flip(0)  # distinct fixated values, ascending
    neg = p[~pos]
    m = levels.numel()
    # negatives at or above / strictly above each level (level j is index m - 1 - group)
    ge = (
        torch.bincount(torch.bucketize(neg, levels, right=True), minlength=m + 1)
        .flip(0)
        .cumsum(0)[:m]
        .flip(0)
    )
    gt = (
        torch.bincount(torch.bucketize(neg, levels, right=False), minlength=m + 1)
        .flip(0)
        .cumsum(0)[:m]
        .flip(0)
    )
    ge, gt = ge.double(), gt.double()
    j = m - 1 - group
    # ties: the expected negatives ranked above the i-th of a tied fixations under random tie-breaking
    fp = (gt[j] + (ge[j] - gt[j]) * rank.double() / (size[group] + 1)) / neg.numel()
    tp = pw.cumsum(0) / pw.sum()
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return torch.trapezoid(torch.cat([zero, tp, one]), torch.cat([zero, fp, one])).item()


def auc_judd(pred: torch.Tensor, fixations: torch.Tensor) -> torch.Tensor:
    """AUC-Judd (module doc). pred (..., h, w); fixations (..., h, w) bool, or non-negative weights (a cell
    with weight > 0 is a positive counted with that weight). Returns (...,) float64; 0.5 where pred is
    constant or no location is unfixated. Raises if a map has no fixation."""
    p, f = _flat(pred), _flat(fixations)
    if (f < 0).any():
        raise ValueError("auc_judd: fixations must be a bool map or non-negative weights")
    lead = p.shape[:-1]
    p, f = p.reshape(-1, p.shape[-1]), f.reshape(-1, f.shape[-1])
    out = torch.full((p.shape[0],), 0.5, dtype=torch.float64)
    varies = _varies(p)
    for i in range(p.shape[0]):
        pos = f[i] > 0
        if not pos.any():
            raise ValueError(f"auc_judd: fixation map at flat index {i} has no fixated location")
        if varies[i] and not pos.all():
            out[i] = _auc_judd_row(p[i], f[i])
    return out.reshape(lead)


#: metric -> f(pred, human map, fixations) on a common grid.
_METRIC_FNS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": lambda p, h, _f: cosine_similarity(p, h),
    "cc": lambda p, h, _f: pearson_cc(p, h),
    "nss": lambda p, _h, f: nss(p, f),
    "auc_judd": lambda p, _h, f: auc_judd(p, f),
}


def downsample_human(
    human: torch.Tensor, fixations: torch.Tensor, max_side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) human maps and fixations -> the same on a grid whose longer side is `max_side` (aspect kept;
    unchanged when already that small): human area-downsampled (mass-preserving), fixations as float votes
    (the share of each cell's pixels that were fixated, proportional to their count)."""
    h, w = human.shape[-2:]
    scale = max_side / max(h, w)
    if scale >= 1:
        return human, fixations
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    votes = F.adaptive_avg_pool2d(fixations.float().unsqueeze(1), size).squeeze(1)
    return resample_map(human.float(), size), votes


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
    layer_metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image scores: {map name: {metric: (N,) float64}}.

    maps: name -> (N, h, w) non-negative maps over the whole image; human: (N, H, W);
    fixations: (N, H, W) bool, or non-negative weights (votes, `downsample_human`).
    layer_metrics: the metrics of the per-layer maps (``"<map>@L<k>"``); every other map gets all of `METRICS`.
    Why: AUC-Judd ranks the pixels of one map at a time, most of the cost when 12 layers x 3 maps are scored.
    """
    unknown = sorted(set(layer_metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"layer_metrics: unknown {unknown}; choose from {list(METRICS)}")
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
        wanted = METRICS if split_layer(name)[1] is None else layer_metrics
        scores[name] = {m: _METRIC_FNS[m](p, h, f) for m in METRICS if m in wanted}
    return scores


@dataclass(frozen=True)
class AlignmentTable:
    """Per-image human-alignment scores {map name: {metric: (N,) float64}} and the grid policy used.

    A name ``"<map>@L<k>"`` (`layer_name`) holds the map of block k alone; a plain name the map as the caller
    made it (e.g. the mean over the alignment layers)."""

    scores: dict[str, dict[str, torch.Tensor]]
    resample: str = DEFAULT_RESAMPLE

    @property
    def metrics(self) -> list[str]:
        """The metrics any map of the table holds, in `METRICS` order (a per-layer map, or a table made by
        hand, may hold fewer)."""
        have = list(dict.fromkeys(m for per_metric in self.scores.values() for m in per_metric))
        return [m for m in METRICS if m in have] + [m for m in have if m not in METRICS]

    @property
    def images(self) -> int:
        first = next(iter(self.scores.values()), {})
        return next(iter(first.values())).numel() if first else 0

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
        summary, metrics = self.summary(), self.metrics
        lines = [
            "| map | " + " | ".join(metrics) + " | images |",
            "|---|" + "---|" * len(metrics) + "---|",
        ]
        for name, stats in summary.items():
            cells = [f"{stats[m][0]:.4f} ± {stats[m][1]:.4f}" if m in stats else "-" for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {self.images} |")
        lines.append(f"\nGrid: {self.resample}.")
        if {"C_AGT", "C_VFM"} <= summary.keys():
            r = {m: self.ratio(metric=m) for m in RATIO_METRICS if m in metrics}
            r = {m: "undefined (C_VFM's mean <= 0)" if math.isnan(v) else f"{v:.2f}x" for m, v in r.items()}
            lines.append(
                f"C_AGT / C_VFM: cosine {r['cosine']} (paper: {PAPER_RATIO}x), CC {r['cc']}, NSS {r['nss']}"
            )
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """One row per map: name, then mean and std of each metric, then the number of images."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = self.metrics
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["map", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "images"])
            for name, stats in self.summary().items():
                cells = [f"{x:.6f}" if m in stats else "" for m in metrics for x in stats.get(m, (0, 0))]
                writer.writerow([name, *cells, self.images])
        return path

    @staticmethod
    def concat(tables: Iterable[AlignmentTable]) -> AlignmentTable:
        """Join tables over disjoint image sets (e.g. batches) that score the same maps."""
        tables = list(tables)
        if not tables:
            raise ValueError("concat: no tables")
        first = tables[0].scores
        for t in tables:
            same = {n: list(v) for n, v in t.scores.items()} == {n: list(v) for n, v in first.items()}
            if list(t.scores) != list(first) or t.resample != tables[0].resample or not same:
                raise ValueError(
                    f"concat: tables differ in maps ({list(t.scores)} vs {list(first)}), metrics or grid policy"
                )
        scores = {
            n: {m: torch.cat([t.scores[n][m] for t in tables]) for m in per} for n, per in first.items()
        }
        return AlignmentTable(scores, tables[0].resample)

    def __str__(self) -> str:
        return self.to_markdown()


def compare_to_human(
    maps: Mapping[str, torch.Tensor],
    human: torch.Tensor,
    fixations: torch.Tensor,
    resample: Resample = DEFAULT_RESAMPLE,
    layer_metrics: Sequence[str] = METRICS,
) -> AlignmentTable:
    """Score named maps {name: (N, h, w)} against human maps (N, H, W) and fixations (N, H, W) bool
    (`score_maps`)."""
    return AlignmentTable(score_maps(maps, human, fixations, resample, layer_metrics), resample)


SampleMaps = Callable[[torch.Tensor, Sequence[Mapping[str, Any]]], Mapping[str, torch.Tensor]]


def evaluate_many(
    dataset: Dataset | Sequence[Mapping[str, Any]],
    sources: Mapping[str, SampleMaps],
    batch_size: int = 8,
    resample: Resample = DEFAULT_RESAMPLE,
    eval_side: int | None = None,
    layer_metrics: Sequence[str] = METRICS,
) -> dict[str, AlignmentTable]:
    """Score several map sources (e.g. one per run, and the reference maps) in one pass over a dataset: each
    batch is decoded and its human maps made once. sources: {key: f(images uint8 (B, 3, H, W), samples) ->
    {name: (B, h, w)}}; samples are the batch's dicts (a source may read e.g. their ``name``).
    eval_side: score on a human grid of this longest side (`downsample_human`); None = full resolution.
    layer_metrics: the metrics of per-layer maps (`score_maps`). Returns {key: AlignmentTable}."""
    parts: dict[str, list[AlignmentTable]] = {k: [] for k in sources}
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([s["image"] for s in batch])
        human = torch.stack([s["human_map"] for s in batch])
        fixations = torch.stack([s["fixations"] for s in batch])
        if eval_side is not None:
            human, fixations = downsample_human(human, fixations, eval_side)
        for key, source in sources.items():
            with torch.no_grad():
                maps = source(images, batch)
            parts[key].append(compare_to_human(maps, human, fixations, resample, layer_metrics))
    return {k: AlignmentTable.concat(v) for k, v in parts.items()}


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
    return evaluate_many(dataset, {"": lambda images, _: model_maps(images)}, batch_size, resample)[""]


# --- per layer and over runs (seeds) -------------------------------------------------------------------------

LAYER_TAG = "@L"


def layer_name(name: str, layer: int) -> str:
    """The table name of map `name` read at block `layer` alone: ``"C_AGT@L6"``."""
    return f"{name}{LAYER_TAG}{layer}"


def split_layer(name: str) -> tuple[str, int | None]:
    """``"C_AGT@L6"`` -> ("C_AGT", 6); a name without a layer -> (name, None)."""
    base, tag, layer = name.rpartition(LAYER_TAG)
    if tag and layer.isdigit():
        return base, int(layer)
    return name, None


def _stat(values: Sequence[float]) -> dict[str, float | int | None]:
    """mean, sample std (None for one value) and n of finite values; mean None when there is none."""
    finite = [v for v in values if not math.isnan(v)]
    n = len(finite)
    mean = sum(finite) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def aggregate(tables: Sequence[AlignmentTable]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """{map: {metric: {"mean", "std", "n"}}}. One table: over its images (n = images). Several (one per run,
    e.g. seeds, on the same images): over the runs' per-image means (n = runs), std the sample std."""
    if not tables:
        raise ValueError("aggregate: no tables")
    first = tables[0]
    if len(tables) == 1:
        return {
            name: {m: _stat([float(x) for x in v.tolist()]) for m, v in per.items()}
            for name, per in first.scores.items()
        }
    for t in tables:
        if {n: list(v) for n, v in t.scores.items()} != {n: list(v) for n, v in first.scores.items()}:
            raise ValueError(
                f"aggregate: runs score different maps ({list(t.scores)} vs {list(first.scores)})"
            )
    return {
        name: {m: _stat([t.scores[name][m].mean().item() for t in tables]) for m in per_metric}
        for name, per_metric in first.scores.items()
    }


def layer_ratios(
    tables: Sequence[AlignmentTable], num: str = "C_AGT", den: str = "C_VFM"
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"mean" or "L<k>": {metric: {"mean", "std", "n", "runs": [ratio per run]}}}: the ratio of the mean
    score of `num` over that of `den` (`score_ratio`), for the plain maps ("mean") and each layer both have,
    per run, then mean ± std over runs (std None for one run; undefined ratios, NaN, are left out of the
    mean and counted out of n)."""
    names = tables[0].scores.keys()
    if any(t.scores.keys() != names for t in tables):
        raise ValueError("layer_ratios: runs score different maps")
    layers: dict[str, tuple[str, str]] = {}
    if {num, den} <= names:
        layers["mean"] = (num, den)
    for name in names:
        base, layer = split_layer(name)
        if base == num and layer is not None and layer_name(den, layer) in names:
            layers[f"L{layer}"] = (name, layer_name(den, layer))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, (n, d) in layers.items():
        out[key] = {}
        for m in RATIO_METRICS:
            if m not in tables[0].scores[n] or m not in tables[0].scores[d]:
                continue
            runs = [t.ratio(n, d, m) for t in tables]
            out[key][m] = {**_stat(runs), "runs": [None if math.isnan(r) else r for r in runs]}
    return out
