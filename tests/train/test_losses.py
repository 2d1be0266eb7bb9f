"""Alignment loss (Eq. 14) and the criterion (Eq. 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfi.train.losses import AlignmentLoss, classification_criterion


def teacher_with_zeros(b: int = 3, size: int = 6) -> torch.Tensor:
    t = torch.zeros(b, size, size, dtype=torch.float64)
    t[:, 1:4, 2:5] = torch.rand(b, 3, 3, dtype=torch.float64) + 0.1  # exact zeros outside the object
    return t / t.sum((-2, -1), keepdim=True)


def student(b: int = 3, size: int = 6) -> torch.Tensor:
    return torch.randn(b, size * size, dtype=torch.float64).softmax(-1).reshape(b, size, size)


def kl_reference(p: np.ndarray, q: np.ndarray, direction: str, eps: float) -> float:
    """float64 numpy, per-sample sums then the mean, written from the docstring's formulas."""
    p, q = p.reshape(len(p), -1), q.reshape(len(q), -1)
    q = (1 - eps) * q + eps / q.shape[1]
    if direction == "teacher_student":
        terms = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) / p), 0.0)
    else:
        terms = p * np.log(p / q)
    return float(terms.sum(1).mean())


@pytest.mark.parametrize(
    "direction,eps",
    [
        ("teacher_student", 0.0),
        ("teacher_student", 0.01),
        ("student_teacher", 1e-3),
        ("student_teacher", 0.1),
    ],
)
def test_finite_with_exact_zeros_and_matches_float64_reference(direction, eps):
    p, q = student(), teacher_with_zeros()
    assert (q == 0).any()
    loss = AlignmentLoss(direction, eps)(p, q)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(kl_reference(p.numpy(), q.numpy(), direction, eps), rel=1e-5)


def test_zero_when_student_equals_teacher():
    q = teacher_with_zeros().float()
    smooth = 0.9 * q + 0.1 / 36
    assert AlignmentLoss()(smooth, smooth).abs() < 1e-6
    assert AlignmentLoss("student_teacher", eps=0.1)(smooth, q).abs() < 1e-6


@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
def test_gradient_pulls_student_toward_teacher(direction):
    q = teacher_with_zeros(1).float()
    logits = torch.zeros(1, 36, requires_grad=True)  # a uniform student
    loss_fn = AlignmentLoss(direction)
    loss = loss_fn(logits.softmax(-1).reshape(1, 6, 6), q)
    loss.backward()
    on_object = q.flatten() > 0
    # descent raises the student's logits on the teacher's object and lowers them elsewhere
    assert (logits.grad.flatten()[on_object] < 0).all() and (logits.grad.flatten()[~on_object] > 0).all()
    if direction == "teacher_student":  # d KL(q || softmax(z)) / dz = p - q
        torch.testing.assert_close(logits.grad.flatten(), (torch.full((36,), 1 / 36) - q.flatten()))
    with torch.no_grad():
        stepped = loss_fn((logits - 1.0 * logits.grad).softmax(-1).reshape(1, 6, 6), q)
    assert stepped < loss


def test_teacher_on_another_grid_is_an_error_not_resampled():
    """The data path puts the teacher on the student's grid once (issue 29); the loss resamples nothing."""
    q = torch.zeros(1, 24, 24)
    q[:, :12, :12] = 1 / 144
    p = torch.full((1, 2, 2), 0.25)
    with pytest.raises(
        ValueError, match=r"student maps \(1, 2, 2\) and teacher maps \(1, 24, 24\) are on different grids"
    ):
        AlignmentLoss()(p, q)


def test_invalid_teacher_maps_are_left_out():
    p, q = student().float(), teacher_with_zeros().float()
    q_bad = q.clone()
    q_bad[1] = 0
    loss_fn = AlignmentLoss()
    expected = torch.stack([loss_fn(p[i : i + 1], q[i : i + 1]) for i in (0, 2)]).mean()
    torch.testing.assert_close(loss_fn(p, q_bad), expected)
    p.requires_grad_()
    loss_fn(p, q_bad).backward()
    assert p.grad[1].abs().max() == 0 and p.grad[0].abs().max() > 0  # the left-out sample gets no gradient
    p.grad = None
    none_valid = loss_fn(p, torch.zeros_like(q))
    none_valid.backward()
    assert none_valid.item() == 0 and p.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        AlignmentLoss("forward")
    with pytest.raises(ValueError, match="eps"):
        AlignmentLoss("student_teacher", eps=0.0)


def test_criterion_reports_each_term_and_weights_them():
    logits, labels = torch.randn(3, 5), torch.tensor([0, 3, 4])
    maps = {6: student().float(), 7: student().float()}
    q = teacher_with_zeros().float()

    def criterion(a, w=1.0):
        return classification_criterion(align_weight=w, aligned=a)

    def batch(teacher):
        return {"label": labels, "map": teacher, "map_valid": teacher.flatten(1).sum(1) > 0}

    outputs = {"logits": logits, "maps": torch.stack(list(maps.values()))}
    out = criterion(True, 0.5)(outputs, batch(q))
    assert criterion(True, 0.5).weight_dict == {"task": 1.0, "align": 0.5}
    align = AlignmentLoss()
    expected_align = (align(maps[6], q) + align(maps[7], q)) / 2
    torch.testing.assert_close(out["align"], expected_align)
    q_bad = q.clone()
    q_bad[1] = 0  # a sample without a teacher map is left out of every layer's term alike
    expected_bad = (align(maps[6], q_bad) + align(maps[7], q_bad)) / 2
    torch.testing.assert_close(criterion(True)(outputs, batch(q_bad))["align"], expected_bad)
    torch.testing.assert_close(out["task"], torch.nn.functional.cross_entropy(logits, labels))
    torch.testing.assert_close(out["loss"], out["task"] + 0.5 * out["align"])
    assert set(criterion(False)({"logits": logits}, {"label": labels})) == {"task", "loss"}
    with pytest.raises(KeyError, match="no 'map'"):
        criterion(True)(outputs, {"label": labels})


def test_detection_criterion_weights_hf_terms_and_alignment():
    from transformers import DetrConfig

    from lfi.train.losses import DenseAlignment, DetrLoss, detection_criterion

    hf = DetrConfig(bbox_loss_coefficient=4, giou_loss_coefficient=3, mask_loss_coefficient=2)
    plain = detection_criterion(hf, aux_weight=0.5)
    assert set(plain.terms) == {"task"} and plain.weight_dict == {"task": 1.0, "aux": 0.5}
    assert plain.terms["task"].coefficients == {"loss_ce": 1.0, "loss_bbox": 4, "loss_giou": 3}
    aligned = detection_criterion(
        hf, masks=True, teacher_maps=lambda batch: ([], None), rows="objects", align_weight=2.0
    )
    assert (
        isinstance(aligned.terms["task"], DetrLoss) and aligned.terms["task"].coefficients["loss_mask"] == 2
    )
    assert isinstance(aligned.terms["align"], DenseAlignment) and aligned.terms["align"].rows == "objects"
    assert aligned.weight_dict["align"] == 2.0
