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


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """logits (B, K), labels (B,) -> {k: number of samples whose label is in the top-k} (k capped at K)."""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices  # (B, kmax)
    hits = top.eq(labels[:, None])
    return {k: int(hits[:, : min(k, kmax)].any(-1).sum()) for k in ks}


def cross_domain_summary(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{"mean_acc1", "var_acc1"} across named test sets (the paper's cross-domain variance); {} for one set."""
    if len(results) < 2:
        return {}
    accs = torch.tensor([r["acc1"] for r in results.values()], dtype=torch.float64)
    return {"mean_acc1": float(accs.mean()), "var_acc1": float(accs.var(unbiased=False))}


class AccuracyEvaluator:
    """Top-1 / top-5 accuracy and mean cross-entropy, accumulated over batches; under DDP `compute` sums the
    counts of every process once (one all-reduce per evaluation, not per batch)."""

    def __init__(self) -> None:
        self.counts = torch.zeros(4, dtype=torch.float64)  # top-1 hits, top-5 hits, summed loss, samples

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (B, K), labels (B,)."""
        hits = topk_correct(logits.float(), labels)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        self.counts += torch.tensor([hits[1], hits[5], float(loss), labels.shape[0]], dtype=torch.float64)

    def compute(self, sync: bool = True) -> dict[str, float]:
        """{"acc1", "acc5" (in %), "loss", "n"}: over every process when `sync` and running distributed, else
        over this process's samples (one process evaluating alone must not wait for the others)."""
        counts = self.counts.clone()
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
