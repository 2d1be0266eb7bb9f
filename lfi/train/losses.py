"""Losses of Learning from Interactions (paper Eq. 13-14), DETR-style: terms with a weight table."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lfi.maps import is_valid_map, resample_map

Direction = Literal["teacher_student", "student_teacher"]


class AlignmentLoss(nn.Module):
    """KL divergence between the student's interaction map and the teacher's C_VLM (Eq. 14).

    Eq. 14 prints D_KL(C_AGT || C_VLM). C_VLM is exactly zero wherever relu(C_fore - C_back) is (Eq. 11), so
    that divergence is infinite as soon as C_AGT (a softmax, positive everywhere) puts any mass there.

    direction="teacher_student" (default): D_KL(C_VLM || C_AGT) = sum q log(q / p). Finite with no smoothing
        (0 log 0 = 0 and p > 0), the direction of knowledge distillation (Hinton et al. 2015): the student
        covers the teacher's mass; its gradient w.r.t. the student's logits is p - q.
    direction="student_teacher": Eq. 14 as printed, D_KL(C_AGT || C_VLM_eps), made finite by smoothing the
        teacher: C_VLM_eps = (1 - eps) C_VLM + eps / P over P cells. Mode-seeking: it pushes the student's
        mass out of the teacher's zero region with a penalty of at most log(P / eps) per unit of mass.
    eps: teacher smoothing; default 0 for teacher_student and 1e-3 for student_teacher (required > 0 there).

    Samples whose teacher map is all zeros (no foreground found, see the store's empty policy) are left out;
    the loss is the mean over valid samples (zero, with a graph, when there are none).
    """

    def __init__(self, direction: Direction = "teacher_student", eps: float | None = None) -> None:
        super().__init__()
        if direction not in ("teacher_student", "student_teacher"):
            raise ValueError(f"direction must be 'teacher_student' or 'student_teacher', got {direction!r}")
        eps = (1e-3 if direction == "student_teacher" else 0.0) if eps is None else eps
        if not 0.0 <= eps < 1.0 or (direction == "student_teacher" and eps == 0.0):
            raise ValueError(f"eps must be in [0, 1) (> 0 for student_teacher), got {eps}")
        self.direction, self.eps = direction, eps

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """student: (..., B, gh, gw) distributions, e.g. (L, B, gh, gw) for L layers; teacher: (B, h, w),
        resampled here to (gh, gw) and shared by the leading dims. -> scalar, the mean over (layer, sample)."""
        teacher = resample_map(teacher.float(), tuple(student.shape[-2:]))
        p = student.float().flatten(-2).clamp_min(torch.finfo(torch.float32).tiny)
        q = teacher.flatten(-2)
        if self.eps > 0:
            q = (1 - self.eps) * q + self.eps / q.shape[-1]
        if self.direction == "teacher_student":
            per_sample = (torch.xlogy(q, q) - q * p.log()).sum(-1)
        else:
            per_sample = (p * (p.log() - q.log())).sum(-1)
        valid = is_valid_map(teacher).expand_as(per_sample)
        # a masked mean, not per_sample[valid]: boolean indexing (and `if valid.any()`) makes the host wait for
        # the device, which left the GPU idle for up to 15 ms of an I-ViT step (benchmarks/README.md)
        return per_sample.where(valid, 0.0).sum() / valid.sum().clamp_min(1)


class LfiCriterion(nn.Module):
    """L_total = w_task * L_task + w_align * L_align (Eq. 13), every term reported.

    weight_dict: {"task": 1.0, "align": align_weight}; the paper's Eq. 13 uses 1 for both.
    The alignment term is the mean over layers of `AlignmentLoss` between each layer's student map and C_VLM.
    """

    def __init__(
        self, align_weight: float = 1.0, alignment: AlignmentLoss | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.alignment = alignment or AlignmentLoss()
        self.label_smoothing = label_smoothing
        self.weight_dict = {"task": 1.0, "align": align_weight}

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        student_maps: dict[int, torch.Tensor] | None = None,
        teacher_maps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """logits (B, K), labels (B,), student_maps {layer: (B, gh, gw)}, teacher_maps (B, h, w).

        Returns {"task", "align" (when maps are given), "loss" (the weighted total)}.
        """
        losses = {"task": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}
        if student_maps:
            if teacher_maps is None:
                raise ValueError("student maps were given but no teacher maps (C_VLM) to align them with")
            # one call over (layer, sample): every layer shares the teacher's valid samples, so this is the mean
            # over layers of each layer's loss, with the loss's kernels launched once rather than per layer
            losses["align"] = self.alignment(torch.stack(list(student_maps.values())), teacher_maps)
        losses["loss"] = sum(self.weight_dict[k] * v for k, v in losses.items())
        return losses
