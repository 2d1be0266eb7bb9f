"""Attach each image's stored interaction map to its sample and move it with the image's transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from lfi.data.transforms import map_to_grid, map_to_image_geometry


def _store_where(store: Any) -> str:
    root = getattr(store, "root", None)
    return f"store {root}" if root is not None else f"store {type(store).__name__}"


def read_stored_map(store: Any, key: str) -> tuple[torch.Tensor, bool]:
    """(map (h, w) float32, valid) of `key`.

    store: an `lfi.extract.store.InteractionStore` (its Record gives map and valid flag) or any mapping
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


class WithInteractionMaps(Dataset):
    """Wrap a dataset whose samples carry 'image' and 'key': attach the stored map, transform jointly.

    Each item is the transformed sample with
        map        float32 (gh, gw) on the student's patch grid, sums to 1, or all zeros when invalid
        map_valid  bool tensor (): False if the teacher's map was invalid or the crop left no mass
    and without 'data' (raw bytes are only needed for extraction). The stored map (teacher grid, covering
    the whole image) is stretched to the image's geometry before `transforms`, so every geometric
    augmentation moves image, boxes, masks and map with the same parameters.

    grid: (gh, gw), or an int patch size: grid = image size after transforms // patch (detection, where
    sizes vary).
    """

    def __init__(
        self,
        dataset: Dataset,
        store: Any,
        transforms: Callable[[dict], dict] | None,
        grid: tuple[int, int] | int,
    ) -> None:
        self.dataset = dataset
        self.store = store
        self.transforms = transforms
        self.grid = grid

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample.pop("data", None)
        stored, valid = read_stored_map(self.store, sample["key"])
        h, w = sample["image"].shape[-2:]
        sample["map"] = map_to_image_geometry(stored, (h, w))
        if self.transforms is not None:
            sample = self.transforms(sample)
        if isinstance(self.grid, int):
            grid = (sample["image"].shape[-2] // self.grid, sample["image"].shape[-1] // self.grid)
        else:
            grid = self.grid
        sample["map"], has_mass = map_to_grid(sample["map"], grid)
        if not valid:
            sample["map"] = torch.zeros_like(sample["map"])
        sample["map_valid"] = has_mass & valid
        return sample
