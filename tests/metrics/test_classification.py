"""Top-k accuracy and the cross-domain summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lfi.metrics.classification import AccuracyEvaluator, cross_domain_summary, topk_correct, write_metrics
from lfi.train.engine import evaluate
from lfi.train.tasks import ClassificationTask


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_correct(logits, labels, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}  # k above K counts every class


class Fixed(torch.nn.Module):
    """Predicts the class stored in the image's first pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 7).float()


def batches(labels: list[int], predicted: list[int]) -> list[dict]:
    x = torch.zeros(len(labels), 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(predicted, dtype=torch.float)
    return [
        {"image": x[:2], "label": torch.tensor(labels[:2])},
        {"image": x[2:], "label": torch.tensor(labels[2:])},
    ]


def test_evaluate_sets_per_domain(tmp_path: Path):
    loaders = {"art": batches([0, 1, 2, 3], [0, 1, 2, 3]), "sketch": batches([0, 1, 2, 3], [0, 0, 0, 0])}
    out = {name: evaluate(Fixed(), ClassificationTask(), loader, "cpu") for name, loader in loaders.items()}
    out |= cross_domain_summary(out)
    assert out["art"]["acc1"] == 100.0 and out["sketch"]["acc1"] == 25.0 and out["sketch"]["n"] == 4
    assert out["mean_acc1"] == pytest.approx(62.5) and out["var_acc1"] == pytest.approx(37.5**2)
    path = write_metrics(out, tmp_path / "m" / "metrics.json")
    assert json.loads(path.read_text())["art"]["acc5"] == 100.0


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        AccuracyEvaluator().compute()
