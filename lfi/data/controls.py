"""Control maps: what a student learns from maps that carry no knowledge of the image (issue 18).

A gain from aligning to a teacher's maps can come from the teacher's knowledge of *where the object is*, or
from any prior that the maps share (mass near the centre, a smooth map, an extra loss that regularises the
attention). The controls keep everything of an aligned run but the maps' content:

    centre    every image gets the same centred Gaussian (`lfi.maps.centre_bias`, sigma 1/4 of each side)
    uniform   every image gets the uniform map: alignment that says nothing at all
    shuffled  each image gets another image's map from the same store (a seeded derangement of its keys):
              the teacher's maps, with their statistics, but not this image's object

A gain that survives `shuffled` is not knowledge transfer; one that survives `centre` is a generic prior.
The control maps live on the store's grid and are moved with every augmentation like the teacher's own.
"""

from __future__ import annotations

from typing import Any

import torch

from lfi.config import CONTROLS
from lfi.maps import centre_bias


def derangement(keys: list[str], seed: int) -> dict[str, str]:
    """Each key -> another key (never itself when there are two or more), a seeded cyclic shift over a random
    order of the sorted keys: a permutation without fixed points, the same for the same keys and seed."""
    ordered = sorted(keys)
    order = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [ordered[i] for i in order]
    return {key: shuffled[(i + 1) % len(shuffled)] for i, key in enumerate(shuffled)}


class ControlMaps:
    """An interaction store seen through a control: the same keys, other maps (see the module docstring).

    store: an `lfi.store.shards.InteractionStore` (anything with `keys()`, `in`, `[key]` and `grid`);
    control: one of CONTROLS but 'none'; seed: the shuffled control's derangement.
    `self[key]` gives what `lfi.data.interaction.read_stored_map` reads: the other image's record (shuffled,
    valid as that image's) or an (h, w) map on the store's grid (centre, uniform; always valid).
    """

    def __init__(self, store: Any, control: str, seed: int = 0) -> None:
        if control not in CONTROLS[1:]:
            raise ValueError(f"control must be one of {CONTROLS[1:]}, got {control!r}")
        self.store, self.control = store, control
        self.root = getattr(store, "root", None)
        grid = tuple(store.grid)
        self._fixed = None
        if control == "centre":
            self._fixed = centre_bias(grid)
        elif control == "uniform":
            self._fixed = torch.full(grid, 1.0 / (grid[0] * grid[1]))
        self._other = derangement(store.keys(), seed) if control == "shuffled" else {}

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.store.grid)

    def keys(self) -> list[str]:
        return self.store.keys()

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, key: object) -> bool:
        return key in self.store

    def __getitem__(self, key: str) -> Any:
        if key not in self.store:
            raise KeyError(f"{self.root}: no record for image key {key!r}")
        if self._fixed is not None:
            return self._fixed.clone()
        return self.store[self._other[key]]


def with_control(store: Any, control: str, seed: int) -> Any:
    """`store` itself for control 'none', else its `ControlMaps` view."""
    return store if control == "none" else ControlMaps(store, control, seed)
