"""Pad-to-square and its undoing: the stored map lines up with the original image."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lfi.extract.vlm.geometry import draw_boxes, expand_to_square, image_box_on_grid, unpad_map


def test_expand_to_square_centres_the_image() -> None:
    image = Image.new("RGB", (60, 30), (255, 255, 255))
    square = expand_to_square(image, (10, 20, 30))
    assert square.size == (60, 60)
    assert square.getpixel((30, 5)) == (10, 20, 30) and square.getpixel((30, 15)) == (255, 255, 255)
    assert square.getpixel((30, 44)) == (255, 255, 255) and square.getpixel((30, 45)) == (10, 20, 30)
    assert image_box_on_grid((30, 60), 12) == (0.0, 3.0, 12.0, 9.0)


@pytest.mark.parametrize("hw", [(30, 60), (60, 30)])
def test_unpad_puts_mass_where_it_was_in_the_original_image(hw: tuple[int, int]) -> None:
    h, w = hw
    grid = 12  # tokens over the padded square of side 60: 5 px per token
    x0, y0, x1, y1 = image_box_on_grid(hw, grid)
    # Mass on the top-left quarter of the original image, expressed on the padded square's token grid.
    square = torch.zeros(1, grid, grid)
    square[0, int(y0) : int(y0 + (y1 - y0) / 2), int(x0) : int(x0 + (x1 - x0) / 2)] = 1.0
    out = unpad_map(square, (h, w), (8, 8))[0]
    assert out.shape == (8, 8)
    assert torch.isclose(out.sum(), torch.tensor(1.0))
    assert out[:4, :4].sum() > 0.9  # the top-left quarter of the output grid = of the original image
    assert out[4:, :].sum() < 0.05 and out[:, 4:].sum() < 0.05


def test_unpad_drops_the_padding_and_keeps_zero_maps_zero() -> None:
    square = torch.zeros(2, 12, 12)
    square[0, :3] = 1.0  # only on the padding strip above a 30x60 image
    out = unpad_map(square, (30, 60), (6, 12))
    assert out.abs().sum() == 0  # no NaN, nothing invented
    with pytest.raises(ValueError, match="square token grid"):
        unpad_map(torch.zeros(1, 4, 5), (30, 60), (4, 4))


def test_draw_boxes_outlines_in_place_of_a_copy() -> None:
    image = Image.new("RGB", (40, 40))
    drawn = draw_boxes(image, [[5, 5, 20, 30]], width=1)
    assert drawn.getpixel((5, 10)) == (255, 0, 0) and drawn.getpixel((12, 12)) == (0, 0, 0)
    assert image.getpixel((5, 10)) == (0, 0, 0)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        draw_boxes(image, [[20, 5, 5, 30]])
