"""Classification metrics: top-1 / top-5 accuracy per named test set (one per unseen domain for the
zero-shot cross-domain protocol of Tables 4-5), and the mean and variance across sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """logits (B, K), labels (B,) -> {k: number of samples whose label is in the top-k} (k capped at K)."""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices  # (B, kmax)
    hits = top.eq(labels[:, None])
    return {k: int(hits[:, : min(k, kmax)].any(-1).sum()) for k in ks}


@torch.no_grad()
def evaluate_loader(
    model: nn.Module, loader: Iterable[dict[str, Any]], device: torch.device | str = "cpu"
) -> dict:
    """Accuracy of `model` (images (B, 3, H, W) -> logits (B, K)) over batches {image, label}.

    Returns {"acc1", "acc5" (in %), "n"}.
    """
    was_training = model.training
    model.eval()
    correct = {1: 0, 5: 0}
    n = 0
    for batch in loader:
        logits = model(batch["image"].to(device))
        labels = batch["label"].to(device)
        for k, c in topk_correct(logits.float(), labels).items():
            correct[k] += c
        n += labels.shape[0]
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate_loader: the loader yielded no samples")
    return {"acc1": 100.0 * correct[1] / n, "acc5": 100.0 * correct[5] / n, "n": n}


def evaluate_sets(
    model: nn.Module, loaders: Mapping[str, Iterable[dict[str, Any]]], device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """{name: {"acc1", "acc5", "n"}} for every named test set, plus "mean_acc1" and "var_acc1" across sets
    (the paper's cross-domain variance) when there are several."""
    out: dict[str, Any] = {name: evaluate_loader(model, loader, device) for name, loader in loaders.items()}
    if len(loaders) > 1:
        accs = torch.tensor([out[name]["acc1"] for name in loaders], dtype=torch.float64)
        out["mean_acc1"] = float(accs.mean())
        out["var_acc1"] = float(accs.var(unbiased=False))
    return out


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write one run's metrics as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
