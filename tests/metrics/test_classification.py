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


def test_accuracy_evaluator_reads_nothing_back_per_batch():
    """update() leaves its sums on the logits' device (a value read per batch would make the host wait for
    the GPU at every validation step); compute() reads them once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Reads.count += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    logits, labels = torch.randn(10, 7), torch.randint(0, 7, (10,))
    evaluator = AccuracyEvaluator()
    with Reads():
        evaluator.update(logits[:6], labels[:6])
        evaluator.update(logits[6:], labels[6:])
    assert Reads.count == 0
    got = evaluator.compute()
    hits = topk_correct(logits, labels)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert got["acc1"] == 100 * hits[1] / 10 and got["acc5"] == 100 * hits[5] / 10 and got["n"] == 10
    assert got["loss"] == pytest.approx(loss, rel=1e-6)
