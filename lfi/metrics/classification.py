"""Classification metrics: top-1 / top-5 accuracy per named test set (one per unseen domain for the
zero-shot cross-domain protocol of Tables 4-5), and the mean and variance across sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from lfi.files import atomic_write


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> torch.Tensor:
    """logits (B, K), labels (B,) -> (len(ks),) int64 on their device: the samples whose label is in the top-k,
    for each k (capped at K). Nothing is read back to the host."""
    kmax = min(max(ks), logits.shape[-1])
    hits = logits.topk(kmax, dim=-1).indices.eq(labels[:, None])  # (B, kmax)
    return torch.stack([hits[:, : min(k, kmax)].any(-1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """logits (B, K), labels (B,) -> {k: number of samples whose label is in the top-k} (k capped at K)."""
    ks = tuple(ks)
    return dict(zip(ks, topk_hits(logits, labels, ks).tolist(), strict=True))


def cross_domain_summary(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{"mean_acc1", "var_acc1"} across named test sets (the paper's cross-domain variance); {} for one set."""
    if len(results) < 2:
        return {}
    accs = torch.tensor([r["acc1"] for r in results.values()], dtype=torch.float64)
    return {"mean_acc1": float(accs.mean()), "var_acc1": float(accs.var(unbiased=False))}


class AccuracyEvaluator:
    """Top-1 / top-5 accuracy and mean cross-entropy, accumulated over batches on the logits' device (no batch
    waits for the GPU: a read per batch would drain its queue at every validation step); `compute` reads them
    once and, under DDP, sums the counts of every process (one all-reduce per evaluation, not per batch)."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None  # (3,) float64: top-1 hits, top-5 hits, summed loss
        self.samples = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (B, K), labels (B,)."""
        logits = logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        batch = torch.cat([topk_hits(logits, labels).double(), loss.double()[None]])
        self.sums = batch if self.sums is None else self.sums + batch
        self.samples += labels.shape[0]

    def compute(self, sync: bool = True) -> dict[str, float]:
        """{"acc1", "acc5" (in %), "loss", "n"}: over every process when `sync` and running distributed, else
        over this process's samples (one process evaluating alone must not wait for the others)."""
        counts = torch.zeros(4, dtype=torch.float64)
        if self.sums is not None:
            counts[:3], counts[3] = self.sums.cpu(), self.samples
        if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
            device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            counts = counts.to(device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        top1, top5, loss, n = counts.tolist()
        if n == 0:
            raise ValueError("AccuracyEvaluator: no samples were evaluated")
        return {"acc1": 100.0 * top1 / n, "acc5": 100.0 * top5 / n, "loss": loss / n, "n": int(n)}


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write one run's metrics as indented JSON, atomically; returns the path."""
    return atomic_write(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
