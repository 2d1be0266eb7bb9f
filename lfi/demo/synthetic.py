"""A small synthetic classification set with a background shortcut, for the offline demo.

Four classes of shapes (circle, square, triangle, cross), each drawn in a random colour at a random place and
size on a textured background. In the `train`, `val` and `id` splits the background colour goes with the
class with probability `correlation` (else a random other background); in the `ood` split it is drawn
independently of the class. A model that reads the background (the shortcut) scores high in distribution and
near chance out of it; one that reads the shape scores the same on both. Each sample has the shape's tight
box, from which the oracle teacher makes its map.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lfi.data.base import make_boxes
from lfi.data.keys import image_key

CLASSES = ("circle", "square", "triangle", "cross")
# One background colour per class (RGB in [0, 1]): the shortcut.
BACKGROUNDS = torch.tensor([[0.80, 0.25, 0.20], [0.20, 0.65, 0.25], [0.20, 0.35, 0.85], [0.85, 0.75, 0.20]])
SPLITS = ("train", "val", "id", "ood")
_SPLIT_SEED = {"train": 0, "val": 1, "id": 2, "ood": 3}


def shape_masks(
    kinds: torch.Tensor, size: int, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    """(n, size, size) bool masks: shape kinds[i] (index into CLASSES) centred at (cx[i], cy[i]), radius r[i] px.

    kinds, cx, cy, r: (n,).
    """
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy, r = x - cx[:, None, None], y - cy[:, None, None], r[:, None, None]
    arm = r / 3
    per_kind = torch.stack([
        dx**2 + dy**2 <= r**2,                                                 # circle
        (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r),                         # square
        (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.55 * (dy + r)),          # triangle
        ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r)),  # cross
    ])  # fmt: skip
    return per_kind[kinds, torch.arange(len(kinds))]


class ShortcutShapes(Dataset):
    """`n` images of `size` px in `split` ('train', 'val', 'id' or 'ood'); samples as in `lfi.data.base`.

    Deterministic: the images depend only on (split, n, size, correlation, seed).
    """

    classes = list(CLASSES)

    def __init__(self, split: str, n: int, size: int = 48, correlation: float = 0.95, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"ShortcutShapes split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {correlation}")
        self.split, self.size = split, size
        g = torch.Generator().manual_seed(seed * 10 + _SPLIT_SEED[split])
        k = len(CLASSES)
        labels = torch.arange(n) % k  # balanced classes
        labels = labels[torch.randperm(n, generator=g)]
        if split == "ood":
            backgrounds = torch.randint(0, k, (n,), generator=g)
        else:
            other = (labels + torch.randint(1, k, (n,), generator=g)) % k
            backgrounds = torch.where(torch.rand(n, generator=g) < correlation, labels, other)
        self.labels_t, self.backgrounds = labels, backgrounds
        self.images, self.boxes = self._draw(labels, backgrounds, g)

    def _draw(self, labels: torch.Tensor, backgrounds: torch.Tensor, g: torch.Generator):
        """-> images uint8 (n, 3, s, s) and tight boxes (n, 4) XYXY of the shapes."""
        n, s = len(labels), self.size
        r = torch.empty(n).uniform_(0.14 * s, 0.24 * s, generator=g)
        cx = r + 1 + torch.rand(n, generator=g) * (s - 2 * r - 2)
        cy = r + 1 + torch.rand(n, generator=g) * (s - 2 * r - 2)
        masks = shape_masks(labels, s, cx, cy, r)
        texture = 0.12 * torch.randn(n, 1, s, s, generator=g)  # per-pixel grain, the same in every channel
        bg = BACKGROUNDS[backgrounds]
        images = bg[:, :, None, None] + texture
        colour = torch.rand(n, 3, generator=g)
        too_close = (colour - bg).abs().sum(1, keepdim=True) < 0.6  # keep the shape visible on its background
        colour = torch.where(too_close, 1 - colour, colour)
        images = torch.where(masks[:, None], colour[:, :, None, None], images)
        rows, cols = masks.any(2), masks.any(1)  # (n, s): which rows / columns the shape touches
        idx = torch.arange(s)
        boxes = torch.stack([
            torch.where(cols, idx, s).amin(1), torch.where(rows, idx, s).amin(1),
            torch.where(cols, idx, -1).amax(1) + 1, torch.where(rows, idx, -1).amax(1) + 1,
        ], 1).float()  # fmt: skip
        return (images.clamp(0, 1) * 255).round().to(torch.uint8), boxes

    @property
    def labels(self) -> list[int]:
        return self.labels_t.tolist()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        relpath = f"shortcut-shapes/{self.split}/{index:05d}.png"
        return {
            "image": tv_tensors.Image(image),
            "label": int(self.labels_t[index]),
            "class_name": CLASSES[int(self.labels_t[index])],
            "boxes": make_boxes(self.boxes[index : index + 1], self.size, self.size),
            "relpath": relpath,
            "key": image_key(relpath, image.numpy().tobytes()),
        }
