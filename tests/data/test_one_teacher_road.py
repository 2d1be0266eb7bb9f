"""Issue 29: one teacher crop-to-grid road. The CPU path (`WithInteractionMaps`, v2 functionals) and the GPU
path (`DeviceBatches`) give the same student-grid map for the same crop and flip: the teacher map is
resampled once, by `lfi.maps.crop_to_grid`, on both. Tolerance 1e-5 (float32 rounding of the window's
corners); before, the CPU path resampled three times (to the image, the crop, the grid) and differed by
up to 0.02 in a cell of these 4x4 maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lfi.data.gpu import DeviceBatches, DeviceImages
from lfi.data.interaction import WithInteractionMaps
from lfi.data.pipelines import classification_transforms
from lfi.maps import crop_to_grid, normalize_map

SIDE, SIZE, GRID = 64, 32, (4, 4)


def teacher(seed: int) -> torch.Tensor:
    return normalize_map(torch.rand(7, 9, generator=torch.Generator().manual_seed(seed)) ** 4)


def cpu_map(m: torch.Tensor, transforms) -> torch.Tensor:
    sample = {"image": tv_tensors.Image(torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)), "key": "k"}
    return WithInteractionMaps([sample], {"k": m}, transforms, GRID)[0]["map"]


def gpu_map(m: torch.Tensor, box: list[float], flip: bool) -> torch.Tensor:
    data = DeviceImages.of(
        np.zeros((1, 3, SIDE, SIDE), np.uint8),
        np.zeros(1, np.int64),
        m[None],
        torch.ones(1, dtype=torch.bool),
        "cpu",
    )
    batches = DeviceBatches(data, [0], 1, SIZE, train=True, grid=GRID)
    return batches._maps(torch.tensor([0]), torch.tensor([box]), torch.tensor([flip]))[0][0]


@pytest.mark.parametrize(
    ("top", "left", "height", "width", "flip"),
    [(0, 0, 64, 64, False), (5, 12, 40, 30, True), (30, 3, 20, 50, False), (9, 40, 24, 24, True)],
)
def test_cpu_and_gpu_paths_give_the_same_grid_map(
    top: int, left: int, height: int, width: int, flip: bool
) -> None:
    m = teacher(top + left)

    def crop_flip(sample: dict) -> dict:
        for k in ("image", "map"):
            sample[k] = F.resized_crop(sample[k], top, left, height, width, [SIZE, SIZE])
            sample[k] = F.horizontal_flip(sample[k]) if flip else sample[k]
        return sample

    cpu = cpu_map(m, crop_flip)
    gpu = gpu_map(m, [left, top, left + width, top + height], flip)
    torch.testing.assert_close(cpu, gpu, atol=1e-5, rtol=0)


def test_eval_crops_agree_where_the_pixels_round_alike() -> None:
    """timm's Resize(32) + CenterCrop(28) of a 64 px image is the GPU path's central 87.5% (4 px margins)."""
    m = teacher(0)
    cpu = cpu_map(m, classification_transforms(train=False, size=28, crop_pct=0.875))
    torch.testing.assert_close(cpu, gpu_map(m, [4, 4, 60, 60], False), atol=1e-5, rtol=0)


def test_crop_to_grid_is_exact_area_averaging() -> None:
    m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    whole = crop_to_grid(m[None], torch.tensor([[0.0, 0.0, 4.0, 3.0]]), (3, 2))[0]
    torch.testing.assert_close(whole, normalize_map(m.reshape(3, 2, 2).sum(-1)))  # pairs of columns
    mirrored = crop_to_grid(m[None], torch.tensor([[4.0, 0.0, 0.0, 3.0]]), (3, 4))[0]
    torch.testing.assert_close(mirrored, normalize_map(m.flip(-1)))
    beyond = crop_to_grid(m[None], torch.tensor([[2.0, 0.0, 6.0, 3.0]]), (3, 2))[0]  # half over padding
    assert beyond[:, 1].abs().max() == 0
    torch.testing.assert_close(beyond[:, 0], normalize_map(m[:, 2:].sum(-1, keepdim=True).T)[0])
