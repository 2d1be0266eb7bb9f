"""A shortcut test on real images (issue 18): TinyImageNet objects with a class-coloured band outside their box.

    train, val, tests = shortcut_splits(TinyImageNet(root, "train"), TinyImageNet(root, "val"),
                                        classes_subset=20, agreement=0.95)
    tests  # {"id": cue agreeing at rate p, "ood": cue independent of the class, "clean": no cue}

The experiment. A fixed, deterministic subset of `classes_subset` classes (evenly spaced in wnids.txt order:
class i * 200 // n for i < n, relabelled 0..n-1) is used for train, val and test alike, and each class owns
one colour of `PALETTE` (20 colours chosen to be told apart at a glance). Every training image carries a cue:
a solid band of its cue class's colour along one image edge. With agreement p, a share p of the training
images carry their own class's colour, the rest the colour of a uniformly drawn *other* class. So the colour
alone names the class with probability p, and reading a flat colour is far easier than recognising a
TinyImageNet object: the shortcut a student takes unless something tells it where the object is. The test
sets are TinyImageNet's val images of the same classes: "id" (same rule p), "ood" (the cue of a uniformly
random class, independent of the label: agreement 1/n) and "clean" (no cue: what the object alone gives).
A student that reads the cue is good on id and near (p-independent) chance on ood; one that reads the
object scores alike on all three.

Why a class subset with one colour each, not all 200 classes: 200 colours (or colour x position codes)
cannot all be told apart after a random resized crop, so the cue would not identify the class and would be
no real shortcut; with n <= 20 classes it identifies the class exactly, as in the classic spurious-correlation
sets (Coloured MNIST, Waterbirds), and the object task stays non-trivial (TinyImageNet at 64 px).

Why a band along the image edge, not a corner square (measured on the 40,000 TinyImageNet training boxes and
torchvision's random-resized-crop rule, scale (0.08, 1)):
- Placement. For one box, a square of side s fits outside the box somewhere iff it fits in the widest of the
  four margins between box and image border, exactly as a band of thickness s does; the band is put along the
  edge with the widest margin (union of the image's boxes; ties: left, top, right, bottom). A band of
  thickness 12 px (`width` 0.1875 of the side) is entirely outside the box for 67% of the training images
  (8 px: 77%, 16 px: 57%); for the others it covers only the box's outer strip, 12 - margin px wide (5.7% of
  the boxes span the whole image: there the cue must cover part of the object).
- Crops. A band survives a crop that reaches within `width` of its edge; a corner square needs that on two
  axes. Of the training crops (at 224 px, 16 px patches), 54% show at least one patch-width of a 12 px band,
  against 34% for a 12 px corner square (16 px: 68% vs 51%); the eval centre crop (crop_pct 0.875) cuts 4 px
  from each side of a 64 px image, which leaves 8 px of the band (two patches at 224 px).
The cue is painted on the decoded uint8 image in `__getitem__`, before any augmentation, so both the CPU
loaders and the GPU path (`lfi.data.gpu`, whose uint8 image cache `lfi.data.cache` keys by `cache_key`) see it.

Image keys are those of the original files (`lfi.data.keys.image_key` of the unpainted bytes), so an oracle
store extracted on plain TinyImageNet train serves this set: the box is the same and the oracle's map never
sees the cue. Which image gets which cue depends only on (seed, the image's relative path): the same image
gets the same cue in any subset, order or process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lfi.data.base import Record

#: One colour per class (RGB uint8), the 20 "distinct colours" of Trubetskoy's list in its order (most
#: distinct first, so the first n of them serve n classes); white and black left out (they look like
#: over-exposed skies and letterboxing).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216), (245, 130, 49),
    (145, 30, 180), (66, 212, 244), (240, 50, 230), (191, 239, 69), (250, 190, 212),
    (70, 153, 144), (220, 190, 255), (154, 99, 36), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 216, 177), (0, 0, 117), (169, 169, 169),
)  # fmt: skip
#: The band's default thickness, a share of the image side: 12 px of a 64 px TinyImageNet image.
DEFAULT_WIDTH = 0.1875
#: What a split's images carry: their class's cue at rate `agreement` ("rule"), a cue independent of the
#: class ("random"), or none ("none").
CUES = ("rule", "random", "none")
EDGES = ("left", "top", "right", "bottom")


def subset_classes(num_classes: int, n: int) -> list[int]:
    """The n classes of the experiment: evenly spaced over 0..num_classes-1 (i * num_classes // n)."""
    if not 1 <= n <= num_classes:
        raise ValueError(f"data.classes_subset must be in [1, {num_classes}], got {n}")
    return [i * num_classes // n for i in range(n)]


def _uniforms(seed: int, tag: str, relpath: str) -> tuple[float, float]:
    """Two numbers in [0, 1) that depend only on (seed, tag, relpath) (SHA-256: stable across processes)."""
    h = hashlib.sha256(f"{seed}|{tag}|{relpath}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64, int.from_bytes(h[8:16], "big") / 2**64


def cue_class(label: int, k: int, relpath: str, cue: str, agreement: float, seed: int) -> int:
    """The class whose colour image `relpath` (of class `label`, k classes) carries; -1 for cue 'none'.

    'rule': `label` with probability `agreement`, else one of the k - 1 other classes uniformly;
    'random': one of the k classes uniformly, whatever the label.
    """
    if cue == "none":
        return -1
    u, v = _uniforms(seed, cue, relpath)
    if cue == "random":
        return min(int(u * k), k - 1)
    if cue != "rule":
        raise ValueError(f"cue must be one of {CUES}, got {cue!r}")
    if u < agreement or k == 1:
        return label
    return (label + 1 + min(int(v * (k - 1)), k - 2)) % k


def band_box(boxes: torch.Tensor, hw: tuple[int, int], width: float) -> tuple[str, tuple[int, int, int, int]]:
    """Where the cue goes: (edge, (x0, y0, x1, y1) in whole pixels, end exclusive), a band `width` of the side
    thick along the edge with the widest margin between the image border and the union of `boxes` (K, 4)
    XYXY pixels (no box: the left edge)."""
    h, w = hw
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    if len(b):
        margins = [
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            w - float(b[:, 2].max()),
            h - float(b[:, 3].max()),
        ]
    else:
        margins = [float(w), float(h), float(w), float(h)]
    edge = EDGES[max(range(4), key=lambda i: (margins[i], -i))]  # the widest; ties: the first in EDGES
    tx, ty = max(1, round(width * w)), max(1, round(width * h))
    region = {
        "left": (0, 0, tx, h),
        "top": (0, 0, w, ty),
        "right": (w - tx, 0, w, h),
        "bottom": (0, h - ty, w, h),
    }
    return edge, region[edge]


def paint_band(image: torch.Tensor, region: tuple[int, int, int, int], colour: Sequence[int]) -> torch.Tensor:
    """A copy of the uint8 image (3, H, W) with `region` (x0, y0, x1, y1) filled with `colour` (RGB)."""
    x0, y0, x1, y1 = region
    out = image.clone()
    out[:, y0:y1, x0:x1] = torch.tensor(colour, dtype=image.dtype)[:, None, None]
    return out


class ShortcutCue(Dataset):
    """`base` (a TinyImageNet split: `records` with boxes, `classes`, `source`) restricted to `classes` (base
    labels, relabelled 0..len-1 in that order) with the cue of each image painted on it (module docstring).

    cue: 'rule' (own class's colour at rate `agreement`, else another class's), 'random' (independent of the
    class) or 'none' (the class subset alone, unpainted). width: the band's thickness, a share of the side.
    seed: which images get which cue. Samples are the base's with 'label' relabelled and, unless cue is
    'none', 'cue' (the class whose colour is painted). Attributes `source` and `records` (this set's images,
    relabelled) and `cache_key` (what the painting depends on) give the image cache (`lfi.data.cache`) its key.
    """

    def __init__(
        self,
        base: Dataset,
        classes: Sequence[int] | None = None,
        cue: str = "rule",
        agreement: float = 1.0,
        width: float = DEFAULT_WIDTH,
        seed: int = 0,
    ) -> None:
        if cue not in CUES:
            raise ValueError(f"cue must be one of {CUES}, got {cue!r}")
        if not 0.0 <= agreement <= 1.0:
            raise ValueError(f"shortcut agreement must be in [0, 1], got {agreement}")
        if not 0.0 < width <= 0.5:
            raise ValueError(f"shortcut band width must be in (0, 0.5] of the side, got {width}")
        classes = list(range(len(base.classes))) if classes is None else list(classes)
        if cue != "none" and len(classes) > len(PALETTE):
            raise ValueError(
                f"the shortcut cue has {len(PALETTE)} colours, one per class, but {len(classes)} classes are used; "
                f"set data.classes_subset to at most {len(PALETTE)}"
            )
        new = {c: i for i, c in enumerate(classes)}
        self.base, self.cue, self.seed = base, cue, seed
        self.agreement, self.width = float(agreement), float(width)
        self.indices = [j for j, r in enumerate(base.records) if r.label in new]
        self.records = [
            Record(r.relpath, new[r.label], r.boxes, r.domain)
            for r in (base.records[j] for j in self.indices)
        ]
        self.source = base.source
        self.class_ids = classes
        self.classes = [base.classes[c] for c in classes]
        base_wnids = getattr(base, "wnids", None)
        self.wnids = [base_wnids[c] for c in classes] if base_wnids is not None else None
        k = len(classes)
        self.cues = [cue_class(r.label, k, r.relpath, cue, self.agreement, seed) for r in self.records]
        self.cache_key = (
            f"shortcut-v1|classes={','.join(map(str, classes))}|cue={cue}|p={self.agreement!r}|"
            f"width={self.width!r}|seed={seed}"
        )

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def band(self, index: int, hw: tuple[int, int] = (64, 64)) -> tuple[str, tuple[int, int, int, int]]:
        """Image `index`'s band (edge, (x0, y0, x1, y1)) on an image of size hw (TinyImageNet: 64 x 64)."""
        return band_box(torch.tensor(self.records[index].boxes).reshape(-1, 4), hw, self.width)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.base[self.indices[index]])
        sample["label"] = self.records[index].label
        if self.cue != "none":
            image = sample["image"]
            _, region = band_box(
                sample["boxes"].as_subclass(torch.Tensor), tuple(image.shape[-2:]), self.width
            )
            painted = paint_band(image.as_subclass(torch.Tensor), region, PALETTE[self.cues[index]])
            sample["image"] = tv_tensors.Image(painted)
            sample["cue"] = self.cues[index]
        return sample


def shortcut_splits(
    train: Dataset,
    val: Dataset,
    classes_subset: int | None,
    agreement: float | None,
    width: float = DEFAULT_WIDTH,
    seed: int = 0,
) -> tuple[ShortcutCue, ShortcutCue, dict[str, ShortcutCue]]:
    """(train, val, tests) of the experiment from a dataset's own train and val splits (module docstring).

    classes_subset: the number of classes (None: all); agreement: the share of train (and "id") images whose
    cue is their class's (None: no cue: the class subset alone, tested on {"val"}). The val returned is the
    dataset's val under the training rule (`lfi.train.data.build_data` replaces it by a held-out share of
    train when data.val_fraction > 0); tests are {"id", "ood", "clean"} with a cue, else {"val"}.
    """
    classes = subset_classes(len(train.classes), classes_subset) if classes_subset is not None else None
    if agreement is None:
        plain = ShortcutCue(val, classes, "none", seed=seed)
        return ShortcutCue(train, classes, "none", seed=seed), plain, {"val": plain}
    rule = {"classes": classes, "agreement": agreement, "width": width, "seed": seed}
    id_test = ShortcutCue(val, cue="rule", **rule)
    tests = {
        "id": id_test,
        "ood": ShortcutCue(val, cue="random", **rule),
        "clean": ShortcutCue(val, classes, "none", seed=seed),
    }
    return ShortcutCue(train, cue="rule", **rule), id_test, tests
