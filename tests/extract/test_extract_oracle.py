"""Oracle teacher: area-exact box coverage, Eq. 12 union/sum of instances, masks, normalisation."""

from __future__ import annotations

import pytest
import torch

from lfi.extract.oracle import OracleTeacher, area_weights, box_coverage
from lfi.extract.teacher import apply_contrast


def _sample(boxes: list[list[float]], hw: tuple[int, int] = (64, 64), **extra: object) -> dict:
    return {
        "image": torch.zeros(3, *hw, dtype=torch.uint8),
        "boxes": torch.tensor(boxes).reshape(-1, 4),
        **extra,
    }


def test_box_aligned_with_cells_gives_indicator() -> None:
    # 64 px on an 8x8 grid: cells are 8 px; box covers cells x 1..2, y 2..4 exactly.
    fore = OracleTeacher(grid=(8, 8)).fore_map(_sample([[8, 16, 24, 40]]))
    expected = torch.zeros(8, 8)
    expected[2:5, 1:3] = 1
    torch.testing.assert_close(fore, expected)


def test_fractional_edges_are_area_exact() -> None:
    # 14x14 grid does not divide 64 px; sub-pixel box edges. Total cell coverage * cell area = box area.
    box = [3.3, 10.25, 50.7, 41.5]
    fore = OracleTeacher(grid=(14, 14)).fore_map(_sample([box]))
    cell_area = (64 / 14) ** 2
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert fore.sum().item() * cell_area == pytest.approx(area, rel=1e-5)
    assert fore.max().item() == pytest.approx(1.0)
    assert fore.min().item() == 0.0
    # an edge cell is partly covered: the cell [0, 64/14) in x covers x in [3.3, 4.571): fraction 0.278
    assert fore[5, 0].item() == pytest.approx((64 / 14 - 3.3) / (64 / 14), rel=1e-5)


def test_area_weights_rows_are_averages() -> None:
    w = area_weights(64, 14)
    torch.testing.assert_close(w.sum(1), torch.ones(14, dtype=torch.float64))
    assert w.shape == (14, 64)


def test_instances_union_vs_eq12_sum() -> None:
    boxes = [[0, 0, 32, 32], [16, 16, 48, 48]]  # overlap 16x16 px
    union = OracleTeacher(grid=(4, 4), combine="union").fore_map(_sample(boxes))
    summed = OracleTeacher(grid=(4, 4), combine="sum").fore_map(_sample(boxes))
    assert union.max().item() == 1.0 and union.sum().item() == pytest.approx(7.0)  # 7 cells of 16x16
    assert summed.max().item() == 2.0 and summed.sum().item() == pytest.approx(8.0)
    maps = apply_contrast(summed[None], torch.zeros(1, 4, 4), "error", ["a"]).maps
    assert maps.sum().item() == pytest.approx(1.0)
    assert maps[0, 1, 1].item() == pytest.approx(2 / 8)


def test_masks_from_polygon_and_tensor_match_box() -> None:
    square = [[8.0, 8.0, 40.0, 8.0, 40.0, 24.0, 8.0, 24.0]]  # polygon of the box (8, 8, 40, 24)
    teacher = OracleTeacher(grid=(8, 8), source="masks")
    poly = teacher.fore_map(_sample([], masks=[square]))
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 8:24, 8:40] = 1
    from_tensor = teacher.fore_map(_sample([], masks=mask))
    box = OracleTeacher(grid=(8, 8)).fore_map(_sample([[8, 8, 40, 24]]))
    torch.testing.assert_close(from_tensor, box)
    # pycocotools rasterises polygon edges to whole pixels: at most one pixel row/column differs
    assert (poly - box).abs().sum().item() * 64 <= 16 + 32 + 1


def test_masks_required_for_mask_source() -> None:
    with pytest.raises(KeyError, match="masks"):
        OracleTeacher(source="masks").fore_map(_sample([[0, 0, 4, 4]], relpath="a.jpg"))


def test_no_boxes_is_empty_under_each_policy() -> None:
    out = OracleTeacher(grid=(4, 4))([_sample([]), _sample([[0, 0, 64, 64]])])
    skip = apply_contrast(out.fore, out.back, "skip", ["none", "full"])
    assert skip.empty.tolist() == [True, False] and skip.valid.tolist() == [False, True]
    assert skip.maps[0].abs().sum().item() == 0.0
    uniform = apply_contrast(out.fore, out.back, "uniform", ["none", "full"])
    assert uniform.empty.tolist() == [True, False] and uniform.valid.tolist() == [True, True]
    torch.testing.assert_close(uniform.maps[0], torch.full((4, 4), 1 / 16))
    with pytest.raises(RuntimeError, match="none"):
        apply_contrast(out.fore, out.back, "error", ["none", "full"])


def test_box_coverage_shape() -> None:
    cov = box_coverage(torch.tensor([[0.5, 0.0, 2.0, 1.0]]), (2, 3))
    torch.testing.assert_close(cov[0], torch.tensor([[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
