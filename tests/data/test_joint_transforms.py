"""Transform-then-map equals map-then-transform: interaction maps move exactly like their images.

Three checks, from exact to approximate:
1. crop / flip / pad (no resampling): a map at the image's resolution, put on the output canvas's pixel grid,
   equals the original map indexed at the source pixel of every output pixel, read from a coordinate image
   sent through the same transform. Exact.
2. random resized crop (upsampling) + flip: the map's window is the source rectangle of the output canvas,
   read from a float coordinate image (a linear ramp, which bilinear upsampling reproduces exactly), its
   mirroring included. Tolerance 1e-3 pixel.
3. oracle maps from a box, with up- and down-sampling: the transformed map, on a 14x14 student grid, vs the
   map rebuilt from the transformed box. The image's resampling blurs the box edge by about one source
   pixel, so they agree up to a total-variation distance (0.5 * L1 of two distributions) of 0.03.
"""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from lfi.data.transforms import InteractionMap, map_to_grid
from lfi.extract.oracle import box_coverage
from lfi.maps import normalize_map


def coordinate_image(h: int, w: int, dtype: torch.dtype) -> tv_tensors.Image:
    """Channels: row index, column index, 1 (a marker that zero padding sets to 0)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return tv_tensors.Image(torch.stack([ys, xs, torch.ones_like(ys)]))


@pytest.mark.parametrize("seed", range(10))
def test_crop_flip_pad_move_map_exactly(seed: int) -> None:
    torch.manual_seed(seed)
    h, w = 50, 70
    m = torch.rand(h, w)
    pipeline = v2.Compose(
        [
            v2.RandomCrop((40, 45)),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.Pad([3, 5, 2, 4], fill=9),
            v2.CenterCrop((44, 48)),
        ]
    )
    out = pipeline({"image": coordinate_image(h, w, torch.int64), "map": InteractionMap.over(m, (h, w))})
    ys, xs, inside = out["image"]
    expected = torch.where(inside == 1, m[ys, xs], torch.zeros(()))  # fill 9 marks padding
    assert isinstance(out["map"], InteractionMap) and out["map"].canvas_size == tuple(ys.shape)
    moved, _ = map_to_grid(out["map"], tuple(ys.shape))
    torch.testing.assert_close(moved, normalize_map(expected), atol=1e-7, rtol=0)


@pytest.mark.parametrize("seed", range(10))
def test_resized_crop_and_flip_move_the_window_with_the_image(seed: int) -> None:
    torch.manual_seed(seed)
    h, w, side = 48, 64, 96
    # Output larger than any crop: pure upsampling, where bilinear resize is exact sampling of a ramp.
    pipeline = v2.Compose([v2.RandomResizedCrop(side, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()])
    out = pipeline(
        {"image": coordinate_image(h, w, torch.float64), "map": InteractionMap.over(torch.rand(h, w), (h, w))}
    )
    ys, xs, _ = out["image"]
    # output pixel k's centre (k + 0.5) samples source position y0 + (k + 0.5) * sy - 0.5 (pixel centres at
    # index + 0.5); read away from the borders, where bilinear resizing clamps
    k = side // 2
    sy, sx = float(ys[k + 1, 0] - ys[k, 0]), float(xs[0, k + 1] - xs[0, k])  # sx < 0: flipped
    y0, x0 = float(ys[k, 0]) + 0.5 - (k + 0.5) * sy, float(xs[0, k]) + 0.5 - (k + 0.5) * sx
    expected = (x0, y0, x0 + sx * side, y0 + sy * side)
    torch.testing.assert_close(torch.tensor(out["map"].window), torch.tensor(expected), atol=1e-3, rtol=0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


@pytest.mark.parametrize(("hw", "size"), [((64, 64), 224), ((240, 320), 64)])
@pytest.mark.parametrize("seed", range(8))
def test_oracle_map_of_transformed_box(hw: tuple[int, int], size: int, seed: int) -> None:
    torch.manual_seed(seed)
    h, w = hw
    x0, y0 = torch.rand(2) * torch.tensor([w / 2, h / 2])
    box = torch.tensor([[x0, y0, x0 + w * (0.2 + 0.3 * torch.rand(1)), y0 + h * (0.2 + 0.3 * torch.rand(1))]])
    sample = {
        "image": tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8)),
        "boxes": tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(h, w)),
        # The teacher's map lives on its own grid, here the image's pixels.
        "map": InteractionMap.over(box_coverage(box, (h, w))[0].float(), (h, w)),
        "label": 1,
    }
    pipeline = v2.Compose([v2.RandomResizedCrop(size, scale=(0.3, 1.0)), v2.RandomHorizontalFlip()])
    out = pipeline(sample)
    moved, moved_valid = map_to_grid(out["map"], (14, 14))
    rebuilt, rebuilt_valid = map_to_grid(
        InteractionMap.over(box_coverage(out["boxes"], (size, size))[0].float(), (size, size)), (14, 14)
    )
    assert moved_valid == rebuilt_valid
    assert not moved.isnan().any()
    assert total_variation(moved, rebuilt) < 0.03


def test_map_cropped_away_is_all_zero_and_invalid() -> None:
    m = torch.zeros(32, 32)
    m[:4, :4] = 1
    cropped = v2.functional.crop(InteractionMap.over(normalize_map(m), (32, 32)), 16, 16, 16, 16)
    grid_map, valid = map_to_grid(cropped, (4, 4))
    assert not valid and torch.equal(grid_map, torch.zeros(4, 4))


def test_colour_and_normalise_leave_map_untouched() -> None:
    m = InteractionMap.over(torch.rand(20, 20), (20, 20))
    image = tv_tensors.Image(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8))
    pipeline = v2.Compose(
        [
            v2.ColorJitter(0.5, 0.5, 0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.2] * 3),
        ]
    )
    out = pipeline({"image": image, "map": m})["map"]
    assert torch.equal(out, m) and out.window == m.window and out.canvas_size == m.canvas_size


def test_interaction_map_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, h, w\)"):
        InteractionMap.of(torch.rand(2, 5, 5), (5, 5), (0, 0, 5, 5), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="teacher map"):
        InteractionMap.over(torch.rand(1, 5, 5), (10, 10))
    with pytest.raises(ValueError, match="only axis-aligned geometry"):
        v2.functional.rotate(InteractionMap.over(torch.rand(5, 5), (10, 10)), 30.0)
