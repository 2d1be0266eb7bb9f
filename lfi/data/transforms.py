"""Interaction maps as a torchvision `tv_tensors` type, so v2 transforms move them with the image.

An `InteractionMap` is a float tensor (1, H, W) in the *image's* geometry: pixel (y, x) of the map is over
pixel (y, x) of the image. Its values are a density over the image (mass per pixel, up to a constant); the
geometric v2 functionals (resize, crop, resized_crop, center_crop, pad, flips, affine, rotate, perspective,
elastic) move it exactly as they move the image, with bilinear interpolation and zero fill whatever the
transform asks of the image (nearest or bicubic would distort or make negative a density; filled-in
border has no mass). Colour, dtype and normalisation functionals are not registered, so v2 passes the map
through them untouched.

Flow: teacher grid (h, w) --`map_to_image_geometry`--> InteractionMap (1, H, W) --v2 pipeline with the
image, boxes, masks--> InteractionMap (1, H', W') --`map_to_grid`--> (gh, gw) on the student's patch grid,
re-normalised. A crop that leaves no mass gives an all-zero (invalid) map, never NaN.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from lfi.maps import is_valid_map, normalize_map, resample_map


class InteractionMap(tv_tensors.TVTensor):
    """An interaction map in image geometry: float (1, H, W), non-negative; (H, W) gets the leading 1."""

    def __new__(
        cls,
        data: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        requires_grad: bool | None = None,
    ) -> InteractionMap:
        tensor = cls._to_tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 3 or tensor.shape[0] != 1 or not tensor.is_floating_point():
            raise ValueError(
                f"InteractionMap expects a float tensor (1, H, W) or (H, W), got {tuple(tensor.shape)} "
                f"{tensor.dtype}"
            )
        return tensor.as_subclass(cls)


# For each functional: the image kernel that does the geometry, and the arguments forced for a density.
_BILINEAR = {"interpolation": InterpolationMode.BILINEAR}
_KERNELS: list[tuple[Callable, Callable, dict[str, Any]]] = [
    (F.resize, F.resize_image, {**_BILINEAR, "antialias": True}),
    (F.resized_crop, F.resized_crop_image, {**_BILINEAR, "antialias": True}),
    (F.crop, F.crop_image, {}),
    (F.center_crop, F.center_crop_image, {}),
    (F.pad, F.pad_image, {"fill": 0.0}),
    (F.horizontal_flip, F.horizontal_flip_image, {}),
    (F.vertical_flip, F.vertical_flip_image, {}),
    (F.affine, F.affine_image, {**_BILINEAR, "fill": None}),
    (F.rotate, F.rotate_image, {**_BILINEAR, "fill": None}),
    (F.perspective, F.perspective_image, {**_BILINEAR, "fill": None}),
    (F.elastic, F.elastic_image, {**_BILINEAR, "fill": None}),
]


def _map_kernel(image_kernel: Callable, forced: dict[str, Any]) -> Callable:
    signature = inspect.signature(image_kernel)

    def kernel(inpt: InteractionMap, *args: Any, **kwargs: Any) -> InteractionMap:
        bound = signature.bind(inpt.as_subclass(torch.Tensor), *args, **kwargs)
        bound.arguments.update(forced)  # None fill means zero for the grid-sample kernels
        return tv_tensors.wrap(image_kernel(*bound.args, **bound.kwargs), like=inpt)

    return kernel


for _functional, _image_kernel, _forced in _KERNELS:
    F.register_kernel(_functional, InteractionMap)(_map_kernel(_image_kernel, _forced))


def map_to_image_geometry(map_hw: torch.Tensor, image_size: tuple[int, int]) -> InteractionMap:
    """Teacher map (h, w) over the whole image -> InteractionMap (1, H, W) for an image of `image_size`.

    The teacher's grid spans the whole image (teachers resize, they do not crop), so the grid is stretched
    to (H, W) by `lfi.maps.resample_map` (bilinear up, area down) and L1-normalised: every image region
    keeps about the mass of the teacher cells over it. An all-zero (invalid) map stays all-zero.
    """
    if map_hw.ndim != 2:
        raise ValueError(f"map_to_image_geometry expects a teacher map (h, w), got {tuple(map_hw.shape)}")
    return InteractionMap(resample_map(map_hw.float(), tuple(image_size)))


def map_to_grid(m: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """After the v2 pipeline: InteractionMap (1, H, W) (or (H, W)) -> (map (gh, gw), valid () bool).

    Resampled to the student's patch grid (area averaging when shrinking) and re-normalised to sum 1;
    a map with no mass left (e.g. cropped away) is all zeros with valid False.
    """
    plain = m.as_subclass(torch.Tensor)
    plain = plain.squeeze(0) if plain.ndim == 3 else plain
    if plain.ndim != 2:
        raise ValueError(f"map_to_grid expects a map (1, H, W) or (H, W), got shape {tuple(m.shape)}")
    out = normalize_map(resample_map(plain.float().clamp_min(0), tuple(grid)))
    return out, is_valid_map(out)
