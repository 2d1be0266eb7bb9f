"""Dense alignment: teacher maps on the encoder grid (padding respected), row choice, gradient path."""

from __future__ import annotations

import pytest
import torch

from lfi.data.collate import collate_detection
from lfi.data.interaction import WithInteractionMaps
from lfi.maps import attention_to_grid
from lfi.models.detr import build_detr
from lfi.models.idetr import interactionize_detr
from lfi.train.losses import AlignmentLoss, DenseAlignment, teacher_on_grid, valid_region
from lfi.train.tasks import oracle_maps, stored_maps


def _grid_mask() -> torch.Tensor:
    m = torch.zeros(2, 4, 6, dtype=torch.bool)
    m[0] = True
    m[1, :2, :3] = True
    return m


def _pixel_mask(grid_mask: torch.Tensor, stride: int = 32) -> torch.Tensor:
    """The pixel mask a grid mask comes from, at `stride` pixels a cell."""
    return grid_mask.repeat_interleave(stride, 1).repeat_interleave(stride, 2)


def _given(batch: dict) -> tuple[list[torch.Tensor], None]:
    """The teacher maps a test hands over in its batch, each over exactly its image."""
    return batch["teacher"], None


def test_teacher_resampled_into_valid_region_only():
    mask = _grid_mask()
    left_half = torch.zeros(8, 8)
    left_half[:, :4] = 1 / 32
    teacher = teacher_on_grid([torch.full((5, 7), 1 / 35), left_half], mask, _pixel_mask(mask))
    assert teacher.shape == (2, 4, 6)
    torch.testing.assert_close(teacher.sum((1, 2)), torch.ones(2))
    torch.testing.assert_close(teacher[0], torch.full((4, 6), 1 / 24))
    assert teacher[1][~mask[1]].abs().max() == 0  # no mass on padding
    assert teacher[1, :2, 0].min() > 0 and teacher[1, :2, 2].max() == 0  # left half of a 3-wide region
    zero = teacher_on_grid([torch.zeros(3, 3), torch.zeros(2, 2)], mask, _pixel_mask(mask))
    assert zero.abs().max() == 0


def test_valid_region_and_errors():
    assert valid_region(_grid_mask()) == [(4, 6), (2, 3)]
    bad = _grid_mask()
    bad[1, 3, 5] = True
    with pytest.raises(ValueError, match="top-left"):
        valid_region(bad)
    with pytest.raises(ValueError, match="batch of 2"):
        teacher_on_grid([torch.ones(2, 2)], _grid_mask(), _pixel_mask(_grid_mask()))
    with pytest.raises(ValueError, match="rows"):
        DenseAlignment(_given, rows="some")


def test_rows_all_vs_objects():
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    attn = torch.zeros(1, 1, 4, 4)
    attn[0, 0, 0, 0] = 1.0  # token 0 looks at itself
    attn[0, 0, 1:, 3] = 1.0  # the others look at token 3
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    align = DenseAlignment(_given, "objects", AlignmentLoss())
    student = attention_to_grid(attn, 0, (2, 2), align.row_weights(mask, teacher))
    torch.testing.assert_close(student, teacher)  # only token 0's row counts
    every = DenseAlignment(_given, "all")
    student_all = attention_to_grid(attn, 0, (2, 2), every.row_weights(mask, teacher))
    torch.testing.assert_close(student_all.flatten(), torch.tensor([0.25, 0.0, 0.0, 0.75]))
    outputs, batch = (
        {"maps": attn[None], "grid_mask": mask},
        {"teacher": [teacher[0]], "pixel_mask": _pixel_mask(mask)},
    )  # maps: (L=1, B, H, N, N)
    assert set(align(outputs, batch)) == {"align"}
    assert float(align(outputs, batch)["align"]) == pytest.approx(0.0, abs=1e-6)
    assert float(every(outputs, batch)["align"]) > 1.0


def test_alignment_trains_interaction_queries(pixels):
    x, pixel_mask = pixels
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7))
    out = idetr.forward_aligned(pixel_values=x, pixel_mask=pixel_mask)
    targets = [{"size": (96, 128), "boxes": torch.tensor([[0.0, 0.0, 60.0, 40.0]])},
               {"size": (64, 64), "boxes": torch.tensor([[30.0, 30.0, 64.0, 64.0]])}]  # fmt: skip
    teachers = oracle_maps(targets)
    assert [tuple(t.shape) for t in teachers] == [(12, 16), (8, 8)]
    align = DenseAlignment(lambda batch: (oracle_maps(batch["targets"]), None))
    maps = torch.stack(
        [m["agt"] for m in out.maps.values()]
    )  # what DetectionTask.forward hands the criterion
    loss = align({"maps": maps, "grid_mask": out.grid_mask}, {"targets": targets, "pixel_mask": pixel_mask})[
        "align"
    ]
    assert loss > 0
    loss.backward()
    layer = idetr.interaction_layers()[1]
    assert layer.iq.weight.grad.abs().sum() > 0
    assert layer.q_proj.weight.grad is None  # C_AGT does not depend on the original queries


def test_stored_maps_are_cut_at_hf_valid_region():
    """A 100x100 image padded to 128x160: HF's mask marks ceil(100 * 4 / 128) = 4 grid rows valid, where
    100 // 32 = 3. The teacher's mass in the image's last 4 pixel rows (96-100) lands in grid row 3 (pixels
    96-128) alone, resampled once from the stored map (before: cut at 3 rows and stretched over 4)."""
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7))
    sizes = [(128, 160), (100, 100)]
    maps = {"a": torch.full((8, 10), 1 / 80), "b": torch.zeros(25, 25)}
    maps["b"][-1] = 1 / 25  # 4 px a cell: pixel rows 96-100
    samples = [{"image": torch.zeros(3, *hw), "key": k} for hw, k in zip(sizes, maps, strict=True)]
    ds = WithInteractionMaps(samples, maps, None, grid=None)
    batch = collate_detection([ds[0], ds[1]])
    out = idetr.forward_aligned(pixel_values=batch["image"], pixel_mask=batch["pixel_mask"].long())
    assert valid_region(out.grid_mask) == [(4, 5), (4, 4)] and 100 // 32 == 3
    stored, windows = stored_maps(batch)
    teacher = teacher_on_grid(stored, out.grid_mask, batch["pixel_mask"], windows)
    torch.testing.assert_close(teacher[0], torch.full((4, 5), 1 / 20))
    torch.testing.assert_close(teacher[1, 3, :4], torch.tensor([0.32, 0.32, 0.32, 0.04]))  # 32, 32, 32, 4 px
    assert teacher[1, :3].abs().max() == 0 and teacher[1, :, 4:].abs().max() == 0
