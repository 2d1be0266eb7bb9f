"""Transform-then-map equals map-then-transform: interaction maps move exactly like their images.

Three checks, from exact to approximate:
1. crop / flip / pad (no resampling): the transformed map equals the original map indexed at the source
   pixel of every output pixel, read from a coordinate image sent through the same transform. Exact.
2. random resized crop (upsampling) + flip of an arbitrary map: equals bilinear sampling of the original map
   at the source positions given by a float coordinate image (a linear ramp, which bilinear interpolation
   reproduces exactly). Tolerance 1e-4 (float32 rounding).
3. oracle maps from a box, with up- and down-sampling: the transformed map, on a 14x14 student grid, vs the
   map rebuilt from the transformed box. Bilinear/antialiased resampling blurs the box edge by about one
   source pixel, so they agree up to a total-variation distance (0.5 * L1 of two distributions) of 0.03.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from lfi.data.transforms import InteractionMap, map_to_grid, map_to_image_geometry
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
    out = pipeline({"image": coordinate_image(h, w, torch.int64), "map": InteractionMap(m)})
    ys, xs, inside = out["image"]
    expected = torch.where(inside == 1, m[ys, xs], torch.zeros(()))  # fill 9 marks padding
    assert isinstance(out["map"], InteractionMap)
    assert torch.equal(out["map"][0], expected)


@pytest.mark.parametrize("seed", range(10))
def test_resized_crop_and_flip_move_arbitrary_map(seed: int) -> None:
    torch.manual_seed(seed)
    h, w = 48, 64
    m = torch.rand(h, w)
    # Output larger than any crop: pure upsampling, where bilinear resize is exact sampling of a ramp.
    pipeline = v2.Compose([v2.RandomResizedCrop(96, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()])
    out = pipeline({"image": coordinate_image(h, w, torch.float64), "map": InteractionMap(m)})
    ys, xs, _ = out["image"]
    # grid_sample (align_corners=True) samples pixel centres at integer coordinates.
    grid = torch.stack([xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1], dim=-1)[None].float()
    expected = F.grid_sample(m[None, None], grid, mode="bilinear", align_corners=True)[0, 0]
    torch.testing.assert_close(out["map"][0], expected, atol=1e-4, rtol=0)


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
        # The teacher's map lives on its own grid; map_to_image_geometry brings it to the image.
        "map": map_to_image_geometry(box_coverage(box, (h, w))[0].float(), (h, w)),
        "label": 1,
    }
    pipeline = v2.Compose([v2.RandomResizedCrop(size, scale=(0.3, 1.0)), v2.RandomHorizontalFlip()])
    out = pipeline(sample)
    moved, moved_valid = map_to_grid(out["map"], (14, 14))
    rebuilt, rebuilt_valid = map_to_grid(
        normalize_map(box_coverage(out["boxes"], (size, size))[0].float()), (14, 14)
    )
    assert moved_valid == rebuilt_valid
    assert not moved.isnan().any()
    assert total_variation(moved, rebuilt) < 0.03


def test_map_cropped_away_is_all_zero_and_invalid() -> None:
    m = torch.zeros(32, 32)
    m[:4, :4] = 1
    cropped = v2.functional.crop(InteractionMap(normalize_map(m)), 16, 16, 16, 16)
    grid_map, valid = map_to_grid(cropped, (4, 4))
    assert not valid and torch.equal(grid_map, torch.zeros(4, 4))


def test_colour_and_normalise_leave_map_untouched() -> None:
    m = InteractionMap(torch.rand(1, 20, 20))
    image = tv_tensors.Image(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8))
    pipeline = v2.Compose(
        [
            v2.ColorJitter(0.5, 0.5, 0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.2] * 3),
        ]
    )
    assert torch.equal(pipeline({"image": image, "map": m})["map"], m)


def test_interaction_map_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        InteractionMap(torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="teacher map"):
        map_to_image_geometry(torch.rand(1, 5, 5), (10, 10))
