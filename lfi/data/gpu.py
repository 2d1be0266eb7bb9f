"""The GPU-resident data path of classification: decoded images, labels and interaction maps live on the
device, and each batch is augmented there, image and map with the same parameters.

    data = DeviceImages.of(cache, maps, valid, device="cuda")
    batches = DeviceBatches(data, sampler, batch_size=256, size=224, train=True, seed=0)
    for batch in batches: ...   # {"image" (B, 3, 224, 224) normalised, "label" (B,), "map" (B, gh, gw), "map_valid" (B,)}

Training: random resized crop (scale (0.08, 1), ratio (3/4, 4/3), torchvision's rule: ten tries, then the
whole image's centre) and a horizontal flip, drawn per image from a generator seeded by (seed, epoch,
batch), so a resumed run draws the same crops. Crops are resampled with `torchvision.ops.roi_align`
(bilinear, several samples per output pixel when shrinking); the map's crop is the image's crop in the map's
coordinates, resampled once onto the student's patch grid by `lfi.maps.crop_to_grid`, as on the CPU path. Evaluation: the central crop_pct of
the image resized to `size` (timm's Resize(size / crop_pct) + CenterCrop(size) on square images).
Compared with the CPU pipeline (`lfi.data.pipelines`), crop corners are not rounded to whole pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torchvision.ops import roi_align

from lfi.data.pipelines import IMAGENET_MEAN, IMAGENET_STD
from lfi.maps import crop_to_grid, is_valid_map


@dataclass
class DeviceImages:
    """A dataset on the device: images uint8 (N, 3, S, S), labels int64 (N,), and for training with a teacher
    maps float32 (N, th, tw) (each over its whole image) with valid bool (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    maps: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        maps: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        device: torch.device | str = "cuda",
    ) -> DeviceImages:
        def to(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        # the cache is a read-only memory map: a CPU tensor gets a copy of its own, a device reads the map
        # itself (one host copy of every image fewer at each fit's start) and keeps no tensor over it
        on_host = torch.device(device).type == "cpu"
        pixels = torch.from_numpy(np.array(images)) if on_host else _read_only_tensor(images)
        return cls(pixels.to(device), torch.from_numpy(labels).to(device), to(maps), to(valid))

    def __len__(self) -> int:
        return self.images.shape[0]


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only array, only to be copied elsewhere (torch cannot mark it read-only, and
    warns that writing to it would be undefined)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def random_resized_boxes(
    n: int,
    side: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> torch.Tensor:
    """(n, 4) crop boxes x0, y0, x1, y1 in pixels of a side x side image, by torchvision's RandomResizedCrop
    rule (ten tries per image; the first that fits, else the whole image)."""
    device = generator.device
    area = side * side * torch.empty(n, tries, device=device).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = log_ratio.exp()
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()
    fits = (w <= side) & (h <= side)
    found = fits.any(1)
    pick = fits.float().argmax(1)[:, None]  # the first that fits (0 where none does: replaced below)
    w, h = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
    w, h = torch.where(found, w, float(side)), torch.where(found, h, float(side))
    x0 = torch.rand(n, device=device, generator=generator) * (side - w)
    y0 = torch.rand(n, device=device, generator=generator) * (side - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def center_boxes(n: int, side: int, crop_pct: float, device: torch.device | str) -> torch.Tensor:
    """(n, 4) boxes of the central crop_pct of a side x side image."""
    margin = side * (1 - crop_pct) / 2
    box = torch.tensor([margin, margin, side - margin, side - margin], device=device)
    return box.expand(n, 4)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images (B, C, H, W) float, boxes (B, 4) x0, y0, x1, y1 in pixels -> (B, C, *size): each image's box."""
    rois = torch.cat(
        [torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1
    )
    return roi_align(images, rois.to(images.dtype), size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def epoch_indices(indices: list[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """An epoch's sample order as one int64 tensor on `device`, copied without waiting for the GPU: a tensor
    built from host values per batch would be a synchronous copy, which drains the GPU's queue at every
    step and leaves it idle while the host launches the next one."""
    order = torch.as_tensor(indices, dtype=torch.int64)
    if device.type == "cuda":
        order = order.pin_memory()
    return order.to(device, non_blocking=True)


@runtime_checkable
class EpochOrder(Protocol):
    """A sampler of (epoch, index) pairs that also gives its epoch and its indices as one tensor (as
    `lfi.train.data.ResumableSampler` does)."""

    epoch: int

    def index_tensor(self) -> torch.Tensor: ...


class DeviceBatches:
    """Batches of a `DeviceImages` in the order of `sampler` (which yields indices, or (epoch, index) pairs
    like `lfi.train.data.ResumableSampler`), augmented on the device.

    size: the model's input side; grid: the student's patch grid for the maps; train: training batches (with
    the maps); augment: random resized crop + flip (else the centre crop), default `train`; Lightning finds
    `sampler` here and calls its set_epoch.
    """

    batch_sampler = None  # what Lightning looks for on a DataLoader: batches come from `sampler` alone

    def __init__(
        self,
        data: DeviceImages,
        sampler: Sequence,
        batch_size: int,
        size: int,
        train: bool,
        seed: int = 0,
        grid: tuple[int, int] | None = None,
        crop_pct: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: bool | None = None,
    ) -> None:
        self.data, self.sampler, self.batch_size, self.size = data, sampler, batch_size, size
        self.train, self.seed, self.grid, self.crop_pct = train, seed, grid, crop_pct
        self.augment = train if augment is None else augment
        # host values become device tensors here, once: each such copy waits for the GPU to drain its queue
        device, side = data.images.device, data.images.shape[-1]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.center = center_boxes(1, side, crop_pct, device)
        if data.maps is not None:
            th, tw = data.maps.shape[-2:]
            self.map_scale = torch.tensor([tw / side, th / side, tw / side, th / side], device=device)
            self.mirror = torch.tensor([2, 1, 0, 3], device=device)  # a box's x0 and x1 swapped

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, indices = self._order()
        first = len(self.sampler) - len(indices)  # batches skipped by a resume keep their numbers
        first_batch = -(-first // self.batch_size) if first else 0
        order_on_device = epoch_indices(indices, self.data.images.device)
        for b, start in enumerate(range(0, len(indices), self.batch_size), start=first_batch):
            yield self.batch(order_on_device[start : start + self.batch_size], epoch, b)

    def _order(self) -> tuple[int, list[int] | torch.Tensor]:
        """The epoch and the indices the sampler yields now; from an `EpochOrder` as one tensor (a Python
        list of the epoch costs milliseconds of host time at every epoch's start)."""
        if isinstance(self.sampler, EpochOrder):
            return self.sampler.epoch, self.sampler.index_tensor()
        order = list(self.sampler)
        epoch = order[0][0] if order and isinstance(order[0], tuple) else 0
        return epoch, [i[1] if isinstance(i, tuple) else i for i in order]

    def batch(self, index: torch.Tensor, epoch: int = 0, number: int = 0) -> dict[str, torch.Tensor]:
        """The batch of `index` (B,): images cropped, resized, flipped (augmented) and normalised.

        The flip and the normalisation act on the stored images, before the crop, which is the same (the
        resampling is linear with weights summing to one inside the image, and a flipped image's crop under
        the mirrored box is the flipped crop) and touches the small source instead of the (B, 3, size, size)
        result three more times."""
        images = self.data.images[index]
        n, side = len(index), images.shape[-1]
        if self.augment:
            generator = torch.Generator(device=images.device)
            generator.manual_seed(hash((self.seed, epoch, number)) & 0x7FFF_FFFF_FFFF_FFFF)
            boxes = random_resized_boxes(n, side, generator)
            flip = torch.rand(n, device=images.device, generator=generator) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            x0, y0, x1, y1 = boxes.unbind(1)
            mirrored = torch.stack([side - x1, y0, side - x0, y1], dim=1)
            source_boxes = torch.where(flip[:, None], mirrored, boxes)
        else:
            boxes = source_boxes = self.center.expand(n, 4)
            flip = torch.zeros(n, dtype=torch.bool, device=images.device)
        images = crop_resize((images.float() - self.mean) / self.std, source_boxes, (self.size, self.size))
        out = {"image": images, "label": self.data.labels[index]}
        if self.train and self.data.maps is not None:
            out["map"], out["map_valid"] = self._maps(index, boxes, flip)
        return out

    def _maps(
        self, index: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher maps under the images' crops and flips, on the student grid: (B, gh, gw), (B,)."""
        maps = self.data.maps[index]  # (B, th, tw), each over its whole image
        window = boxes * self.map_scale
        # a flip mirrors the window; the columns by a device index (a Python list would be copied to the
        # device at every batch, synchronously)
        window = torch.where(flip[:, None], window.index_select(1, self.mirror), window)
        grid = crop_to_grid(maps, window, self.grid)
        valid = self.data.valid[index] & is_valid_map(grid)
        return grid * valid[:, None, None], valid
