"""Losses of Learning from Interactions (paper Eq. 13-14), DETR-style: terms, and one weight table.

    criterion = Criterion({"task": ClassificationLoss(), "align": MapAlignment()}, {"task": 1.0, "align": 1.0})
    losses = criterion(outputs, batch)   # {"task", "align", "loss"}; "loss" = sum of weight_dict[k] * term k

Every weight of every task lives in `Criterion.weight_dict`: task, aux (DETR's decoder-layer losses), align
(Eq. 14), kd (the result-oriented baseline). The student's outputs are a dict (see `lfi.train.tasks`):
"logits" (B, K) or DETR's "loss_dict", and "maps": the supervised attention of the alignment layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lfi.maps import attention_to_grid, crop_to_grid, is_valid_map

Direction = Literal["teacher_student", "student_teacher"]
Rows = Literal["all", "objects"]
#: What `DenseAlignment` reads: batch -> (one teacher map per image, their windows (B, 4) or None).
TeacherMaps = Callable[[Mapping[str, Any]], tuple[Sequence[torch.Tensor], torch.Tensor | None]]


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
        """student: (..., B, gh, gw) distributions, e.g. (L, B, gh, gw) for L layers; teacher: (B, gh, gw) on
        the same grid (the data path puts it there, `lfi.maps.crop_to_grid`), shared by the leading dims.
        -> scalar, mean over (layer, sample)."""
        if student.shape[-2:] != teacher.shape[-2:]:
            raise ValueError(
                f"AlignmentLoss: student maps {tuple(student.shape)} and teacher maps {tuple(teacher.shape)} are on "
                "different grids; the teacher's map must be resampled onto the student's grid once, in the data path"
            )
        teacher = teacher.float()
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


class ClassificationLoss(nn.Module):
    """L_task of classification: cross-entropy of outputs["logits"] (B, K) with batch["label"] (B,)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {
            "task": F.cross_entropy(outputs["logits"], batch["label"], label_smoothing=self.label_smoothing)
        }


class DetrLoss(nn.Module):
    """L_task and L_aux of DETR from HF's Hungarian-matched `loss_dict` (the model computes the terms).

    coefficients: HF's per-term weights ({"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, ...}); the terms of
    the last decoder layer make "task", those of the earlier layers (suffix `_i`) make "aux", so that
    task + aux is HF's own total and `weight_dict["aux"]` scales DETR's auxiliary losses.
    """

    def __init__(self, coefficients: Mapping[str, float]) -> None:
        super().__init__()
        self.coefficients = dict(coefficients)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        task, aux = [], []
        for name, value in outputs["loss_dict"].items():
            base, _, layer = name.rpartition("_")
            if layer.isdigit() and base in self.coefficients:
                aux.append(self.coefficients[base] * value)
            elif name in self.coefficients:
                task.append(self.coefficients[name] * value)
        out = {"task": torch.stack(task).sum()}
        if aux:
            out["aux"] = torch.stack(aux).sum()
        return out


class MapAlignment(nn.Module):
    """L_align of I-ViT (Eq. 14): outputs["maps"] (L, B, gh, gw), the alignment layers' student maps, against
    batch["map"] (B, gh, gw), the teacher's C_VLM on the student's grid (zeroed where batch["map_valid"] is
    False, which `AlignmentLoss` leaves out)."""

    def __init__(self, alignment: AlignmentLoss | None = None) -> None:
        super().__init__()
        self.alignment = alignment or AlignmentLoss()

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if "map" not in batch:
            raise KeyError(
                "the student is aligned to C_VLM but the batch has no 'map' (no interaction store?)"
            )
        teacher = batch["map"] * batch["map_valid"].to(batch["map"].dtype)[:, None, None]
        return {"align": self.alignment(outputs["maps"], teacher)}


class DenseAlignment(nn.Module):
    """L_align of I-DETR (Eq. 12-14 on the encoder's feature grid).

    In a padded batch an image occupies the top-left (hv, wv) cells of the encoder's (gh, gw) grid (HF pads
    bottom/right); its teacher map is resampled into that region only and is zero over the padding. The
    student map of each alignment layer is its (B, H, N, N) encoder attention reduced by `attention_to_grid`
    over the supervised query rows:
    rows="all": every real (non-padding) token's row: the encoder as a whole should look where the teacher
        looks, the detector's analogue of the class-token row of I-ViT.
    rows="objects": the rows of tokens inside objects (teacher mass > 0); background tokens may gather
        context. An image whose map has no mass on the grid falls back to all real tokens (then masked anyway).

    teacher_maps: batch -> (one (h_i, w_i) map per image, windows): the oracle's on-the-fly maps, each over
        exactly its transformed image (windows None), or the store's with (B, 4) windows, the part of each
        map its transformed image spans (`lfi.data.WithInteractionMaps` with grid None).
    """

    def __init__(
        self,
        teacher_maps: TeacherMaps,
        rows: Rows = "all",
        alignment: AlignmentLoss | None = None,
    ) -> None:
        super().__init__()
        if rows not in ("all", "objects"):
            raise ValueError(f"rows must be 'all' or 'objects', got {rows!r}")
        self.teacher_maps, self.rows = teacher_maps, rows
        self.alignment = alignment or AlignmentLoss()

    def row_weights(self, grid_mask: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw) mask and teacher grid maps -> (B, N) weights of the supervised query rows."""
        valid = grid_mask.flatten(1).float()
        if self.rows == "all":
            return valid
        inside = (teacher.flatten(1) > 0).float() * valid
        return torch.where(inside.sum(1, keepdim=True) > 0, inside, valid)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """outputs["maps"]: (L, B, H, N, N) supervised attention; outputs["grid_mask"]: (B, gh, gw) bool."""
        grid_mask = outputs["grid_mask"]
        maps, windows = self.teacher_maps(batch)
        teacher = teacher_on_grid(maps, grid_mask, batch["pixel_mask"], windows)
        weights = self.row_weights(grid_mask, teacher)
        students = attention_to_grid(outputs["maps"], 0, tuple(grid_mask.shape[-2:]), weights)
        return {"align": self.alignment(students, teacher)}


def valid_region(grid_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(B, gh, gw) bool -> [(hv, wv)] per image: the size of its top-left valid rectangle.

    Raises if an image's valid cells are not a top-left rectangle (padding must be bottom/right).
    """
    sizes = []
    for b, m in enumerate(grid_mask.bool()):
        hv, wv = int(m.any(1).sum()), int(m.any(0).sum())
        if int(m.sum()) != hv * wv or not bool(m[:hv, :wv].all()):
            raise ValueError(
                f"grid_mask[{b}]: valid cells are not a top-left rectangle (pad bottom/right only)"
            )
        sizes.append((hv, wv))
    return sizes


def teacher_on_grid(
    teachers: Sequence[torch.Tensor],
    grid_mask: torch.Tensor,
    pixel_mask: torch.Tensor,
    windows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image teacher maps (h_i, w_i) -> (B, gh, gw) on the encoder's grid: each resampled once
    (`lfi.maps.crop_to_grid`) into its image's valid region as HF's backbone marks it (`grid_mask`, its
    pixel mask (B, Hp, Wp) brought down to the grid), zero elsewhere.

    windows: (B, 4) the part of each map (x0, y0, x1, y1 in map cells) that the image spans; None = the
    whole map. HF rounds the region up: its hv rows reach hv * Hp / gh pixels down, a little past the image's
    h, so the window is stretched by that ratio; every cell gets the teacher's mass over the pixels it covers.
    """
    if len(teachers) != grid_mask.shape[0]:
        raise ValueError(f"teacher maps: got {len(teachers)} for a batch of {grid_mask.shape[0]} images")
    (gh, gw), (ph, pw) = grid_mask.shape[-2:], pixel_mask.shape[-2:]
    out = torch.zeros(grid_mask.shape, dtype=torch.float32, device=grid_mask.device)
    regions = zip(valid_region(grid_mask), valid_region(pixel_mask), strict=True)
    for b, (t, ((hv, wv), (h, w))) in enumerate(zip(teachers, regions, strict=True)):
        if t.dim() != 2:
            raise ValueError(f"teacher map {b}: expected (h, w), got shape {tuple(t.shape)}")
        if not (hv and wv):
            continue
        x0, y0, x1, y1 = windows[b].tolist() if windows is not None else (0.0, 0.0, t.shape[1], t.shape[0])
        fx, fy = wv * pw / (gw * w), hv * ph / (gh * h)
        region = torch.tensor([[x0, y0, x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy]], device=out.device)
        out[b, :hv, :wv] = crop_to_grid(t.to(out.device).float().clamp_min(0)[None], region, (hv, wv))[0]
    return out


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """student, teacher: (B, K) logits over the same K classes -> scalar T^2 * mean_B KL(p_t || p_s)."""
    if student.shape != teacher.shape:
        raise ValueError(f"kd_loss: student logits {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    log_p_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


class Distillation(nn.Module):
    """L_kd, the result-oriented baseline (Hinton et al. 2015): KL between the temperature-softened logits of
    a frozen teacher (`lfi.train.distill.LogitTeacher`) on batch["image"] and the student's outputs["logits"]."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0) -> None:
        super().__init__()
        self.teacher, self.temperature = teacher, temperature

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"kd": kd_loss(outputs["logits"], self.teacher(batch["image"]), self.temperature)}


class Criterion(nn.Module):
    """L_total = sum_k weight_dict[k] * L_k (Eq. 13 and its extensions), every term reported.

    terms: name -> module(outputs, batch) -> {term name: scalar}; a term may report several names (DETR's
    task and aux). weight_dict: every reported name's weight; a name without a weight is an error.
    """

    def __init__(self, terms: Mapping[str, nn.Module], weight_dict: Mapping[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weight_dict = dict(weight_dict)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        for term in self.terms.values():
            losses.update(term(outputs, batch))
        missing = sorted(set(losses) - set(self.weight_dict))
        if missing:
            raise KeyError(
                f"Criterion: no weight for the loss terms {missing}; weight_dict has {sorted(self.weight_dict)}"
            )
        losses["loss"] = sum(self.weight_dict[k] * v for k, v in losses.items())
        return losses


def classification_criterion(
    align_weight: float = 1.0,
    direction: Direction = "teacher_student",
    label_smoothing: float = 0.0,
    kd_teacher: nn.Module | None = None,
    kd_weight: float = 0.0,
    kd_temperature: float = 4.0,
    aligned: bool = True,
) -> Criterion:
    """The criterion of an I-ViT (or ViT) classifier: task [+ align] [+ kd], with their weights."""
    terms: dict[str, nn.Module] = {"task": ClassificationLoss(label_smoothing)}
    weights = {"task": 1.0}
    if aligned:
        terms["align"], weights["align"] = MapAlignment(AlignmentLoss(direction)), align_weight
    if kd_teacher is not None:
        terms["kd"], weights["kd"] = Distillation(kd_teacher, kd_temperature), kd_weight
    return Criterion(terms, weights)


def detection_criterion(
    hf_config: Any,
    masks: bool = False,
    aux_weight: float = 1.0,
    teacher_maps: TeacherMaps | None = None,
    rows: Rows = "all",
    direction: Direction = "teacher_student",
    align_weight: float = 1.0,
) -> Criterion:
    """The criterion of an (I-)DETR: task + aux (HF's terms, weighted by the coefficients of its config
    `hf_config`; masks: the segmentation terms too) [+ dense align when `teacher_maps` is given]."""
    coefficients = {
        "loss_ce": 1.0,
        "loss_bbox": hf_config.bbox_loss_coefficient,
        "loss_giou": hf_config.giou_loss_coefficient,
    }
    if masks:
        coefficients |= {
            "loss_mask": hf_config.mask_loss_coefficient,
            "loss_dice": hf_config.dice_loss_coefficient,
        }
    terms: dict[str, nn.Module] = {"task": DetrLoss(coefficients)}
    weights = {"task": 1.0, "aux": aux_weight}
    if teacher_maps is not None:
        terms["align"] = DenseAlignment(teacher_maps, rows, AlignmentLoss(direction))
        weights["align"] = align_weight
    return Criterion(terms, weights)
