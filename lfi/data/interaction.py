"""Attach each image's stored interaction map to its sample and move it with the image's transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from lfi.data.base import Samples
from lfi.data.transforms import InteractionMap, map_to_grid


def _store_where(store: Any) -> str:
    root = getattr(store, "root", None)
    return f"store {root}" if root is not None else f"store {type(store).__name__}"


def read_stored_map(store: Any, key: str) -> tuple[torch.Tensor, bool]:
    """(map (h, w) float32, valid) of `key`.

    store: an `lfi.store.shards.InteractionStore` (its Record gives map and valid flag) or any mapping
    ``store[key] -> (h, w) tensor`` (valid = the map has mass). A missing key is a KeyError naming the key
    and the store, never a silent substitute map.
    """
    if key not in store:
        raise KeyError(
            f"no interaction map for image key {key!r} in {_store_where(store)}; "
            "extract maps for this dataset first (lfi extract), with the same data files"
        )
    value = store[key]
    if isinstance(value, torch.Tensor):
        return value.float(), bool(value.sum() > 0)
    return value.map.float(), bool(value.valid)


class WithInteractionMaps(Samples):
    """Wrap a dataset whose samples carry 'image' and 'key': attach the stored map, transform jointly.

    Each item is the transformed sample with
        map        float32 (gh, gw) on the student's patch grid, sums to 1, or all zeros when invalid
        map_valid  bool tensor (): False if the teacher's map was invalid or the crop left no mass
    and without 'data' (raw bytes are only needed for extraction). The stored map (teacher grid, covering
    the whole image) goes through `transforms` as an `InteractionMap`, so every geometric augmentation moves
    image, boxes, masks and map with the same parameters; it is resampled once, onto `grid`.

    grid: (gh, gw), or None (detection, where the encoder's grid is known only in the forward pass): then
    map is the teacher's own (h, w) map, untouched, and map_box (4,) its window over the transformed image
    (x0, y0, x1, y1 in map cells, `lfi.maps.crop_to_grid`), for the loss to place on the encoder's grid.
    """

    def __init__(
        self,
        dataset: Dataset,
        store: Any,
        transforms: Callable[[dict], dict] | None,
        grid: tuple[int, int] | None,
    ) -> None:
        super().__init__(dataset, transforms)
        self.store, self.grid = store, grid

    def prepare(self, sample: dict, index: int) -> dict:
        stored, valid = read_stored_map(self.store, sample["key"])
        sample["map"] = InteractionMap.over(stored, tuple(sample["image"].shape[-2:]))
        sample["map_valid"] = valid  # the teacher's flag (a bool: v2 passes it by), until the grid is known
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        moved, valid = sample["map"], sample["map_valid"]
        if self.grid is None:
            sample["map"], sample["map_box"] = moved.visible(), moved.box()
            has_mass = torch.tensor(True)  # decided on the encoder's grid, by the loss
        else:
            sample["map"], has_mass = map_to_grid(moved, self.grid)
        if not valid:
            sample["map"] = torch.zeros_like(sample["map"])
        sample["map_valid"] = has_mass & valid
        return sample
