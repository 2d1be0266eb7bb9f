"""The teacher interface: what `lfi extract` needs from any source of interaction maps.

A teacher turns a batch of samples into two maps per image on its own grid (h, w):

- ``fore``: interaction strength for the foreground (paper: C_fore, or sum_k C_obj^(k) for dense tasks),
- ``back``: interaction strength for the background (paper: C_back).

The extraction loop (not the teacher) then applies Eq. 11/12, ``C = relu(fore - back) / ||.||_1``
(`lfi.maps.contrast_map`), and the store's empty policy. A teacher that already produces a final map
returns it as ``fore`` with ``back`` all zeros: the contrast then only re-normalises it.

To add a teacher, subclass `Teacher` and register a factory::

    @register_teacher("mine")
    def _build(**kwargs) -> Teacher:
        return MyTeacher(**kwargs)

Built-in names: "oracle" (`lfi.extract.oracle`), "vit" (`lfi.extract.vit_teacher`) and "llava"
(`lfi.extract.vlm`). Their modules are imported on first use by `build_teacher`, so a teacher's heavy
dependencies load only when it is asked for.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import torch
from PIL import Image

from lfi.maps import contrast_map, is_valid_map


class Sample(TypedDict, total=False):
    """One image as the extraction loop and teachers see it (the dataset adapter protocol).

    relpath: dataset-relative path of the image file (part of the store key).
    data: the raw encoded file bytes (their hash is the other part of the store key).
    image: uint8 tensor (3, H, W) or a PIL image.
    label: int class index in the dataset's own label space.
    class_name: human-readable class name (TinyImageNet: its wnid, e.g. "n01443537", is also accepted).
    wnid: optional WordNet id of the class (lets ImageNet teachers find the class exactly).
    boxes: float tensor (K, 4), XYXY in pixels of `image`; K may be 0.
    masks: optional instance masks: bool/uint8 tensor (K, H, W) or a list of K COCO segmentations
        (polygon lists or RLE dicts).
    key: optional precomputed store key (else `lfi.data.keys.image_key(relpath, data)`).
    """

    relpath: str
    data: bytes
    image: torch.Tensor | Image.Image
    label: int
    class_name: str
    wnid: str
    boxes: torch.Tensor
    masks: Any
    key: str


@dataclass
class TeacherOutput:
    """A teacher's answer for a batch of B images.

    fore, back: float (B, h, w), non-negative, on the teacher's grid.
    info: one JSON-serialisable dict per image, stored with its record (e.g. which class was explained).
    """

    fore: torch.Tensor
    back: torch.Tensor
    info: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fore.dim() != 3 or self.fore.shape != self.back.shape:
            raise ValueError(
                f"TeacherOutput: fore and back must both be (B, h, w); got {tuple(self.fore.shape)} "
                f"and {tuple(self.back.shape)}"
            )
        if not self.info:
            self.info = [{} for _ in range(self.fore.shape[0])]
        if len(self.info) != self.fore.shape[0]:
            raise ValueError(f"TeacherOutput: {len(self.info)} info dicts for {self.fore.shape[0]} maps")


class Teacher(ABC):
    """Base class of every teacher. Subclasses set `name` and `grid` and implement `__call__`."""

    name: str
    grid: tuple[int, int]

    def metadata(self) -> dict[str, Any]:
        """What produced the maps, stored once per store and checked when training reads it.

        Override to add checkpoint, revision, prompt, layers, heads... Values must be JSON-serialisable.
        """
        return {"teacher": self.name, "grid": list(self.grid)}

    @abstractmethod
    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        """Maps for a batch of samples: TeacherOutput with fore/back (len(batch), *self.grid)."""


EmptyPolicy = Literal["skip", "uniform", "error"]
EMPTY_POLICIES: tuple[str, ...] = ("skip", "uniform", "error")
DEFAULT_EMPTY: EmptyPolicy = "skip"
"""Default: keep the all-zero map as an *invalid* record that training masks out of L_align.

Why: it invents nothing (a uniform map would teach "look everywhere" as if the teacher had said so), it
keeps the record so a re-run does not recompute it, and it follows the map convention of `lfi.maps`.
"""


class EmptyMapError(RuntimeError):
    """Raised under empty="error" when relu(fore - back) is zero everywhere for an image."""


@dataclass
class Contrasted:
    """Result of `apply_contrast` for B images: maps (B, h, w), valid (B,), empty (B,) bools."""

    maps: torch.Tensor
    valid: torch.Tensor
    empty: torch.Tensor


def apply_contrast(
    fore: torch.Tensor, back: torch.Tensor, empty: EmptyPolicy, keys: Sequence[str]
) -> Contrasted:
    """Eq. 11/12 plus the empty policy. fore, back: (B, h, w); keys name the images in errors.

    empty: what to do where relu(fore - back) is zero everywhere (the teacher saw no foreground):
      "skip"    store the all-zero map, marked invalid (training leaves it out of the alignment loss),
      "uniform" store the uniform map 1/(h*w), marked valid (a "look everywhere" prior),
      "error"   raise `EmptyMapError` naming the image.
    Every such image is flagged in `empty`, whatever the policy, so it is counted and reported.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    # Checked on the inputs: normalising would turn a NaN map into an all-zero ("empty") one, silently.
    finite = torch.isfinite(fore).flatten(1).all(1) & torch.isfinite(back).flatten(1).all(1)
    if not finite.all():
        bad = [keys[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(f"teacher returned non-finite maps (NaN or Inf) for {bad}; nothing stored for them")
    maps = contrast_map(fore.float(), back.float())
    is_empty = ~is_valid_map(maps)
    if is_empty.any():
        if empty == "error":
            names = [keys[i] for i in torch.nonzero(is_empty).flatten().tolist()]
            raise EmptyMapError(f"relu(fore - back) is zero everywhere for {names} (empty='error')")
        if empty == "uniform":
            maps[is_empty] = 1.0 / (maps.shape[-2] * maps.shape[-1])
    return Contrasted(maps=maps, valid=is_valid_map(maps), empty=is_empty)


def image_hw(image: torch.Tensor | Image.Image) -> tuple[int, int]:
    """(H, W) of a (3, H, W) tensor or a PIL image."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if image.dim() != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    return int(image.shape[-2]), int(image.shape[-1])


_REGISTRY: dict[str, Callable[..., Teacher]] = {}
# Modules that register the built-in names when imported (lazy: torch/timm/transformers load on demand).
_BUILTIN_MODULES = {
    "oracle": "lfi.extract.oracle",
    "vit": "lfi.extract.vit_teacher",
    "llava": "lfi.extract.vlm",
    "hf": "lfi.extract.vlm",
}


def register_teacher(name: str) -> Callable[[Callable[..., Teacher]], Callable[..., Teacher]]:
    """Decorator: make `factory(**kwargs) -> Teacher` available as `build_teacher(name, **kwargs)`."""

    def decorate(factory: Callable[..., Teacher]) -> Callable[..., Teacher]:
        _REGISTRY[name] = factory
        return factory

    return decorate


def available_teachers() -> list[str]:
    """Names `build_teacher` accepts (built-in ones whether or not their module is imported yet)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def build_teacher(name: str, **kwargs: Any) -> Teacher:
    """Build a registered teacher by name, importing a built-in teacher's module on first use."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise KeyError(f"unknown teacher {name!r}; available: {available_teachers()}")
    return _REGISTRY[name](**kwargs)
