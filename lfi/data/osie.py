"""OSIE eye-tracking data (Xu et al., JoV 2014) as per-image human attention maps.

Reads the official layout, either inside a zip (``osie/osie-dev.zip``) or unpacked in a folder:
``osie/data/stimuli/<name>.jpg`` (800x600 photographs) and ``osie/data/eye/fixations.mat``, a struct array
``fixations`` with one entry per image (``img``: file name, ``subjects``: 15 structs with ``fix_x``,
``fix_y`` in pixels and ``fix_duration`` in ms).

A human attention map places every subject's fixations on the image grid and blurs them with a Gaussian of
``sigma`` pixels (24 px is about one degree of visual angle for OSIE's 800x600 stimuli, the usual choice in
saliency benchmarks), then L1-normalises (the `lfi.maps` convention). The binary fixation map (the fixated
pixels before blurring) comes with it, as NSS is defined on fixation locations, not on the blurred map.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset

from lfi.data.base import decode_rgb
from lfi.data.source import open_source
from lfi.maps import normalize_map

STIMULI_DIR = "data/stimuli"  # paths relative to the archive's osie/ folder
FIXATIONS_MAT = "data/eye/fixations.mat"
DEFAULT_SIGMA_PX = 24.0
_FIELDS = ("fix_x", "fix_y", "fix_duration")


def parse_fixations(mat_bytes: bytes, source: str = FIXATIONS_MAT) -> dict[str, np.ndarray]:
    """Parse OSIE's ``fixations.mat`` into ``{image file name: (n, 3) float64 [x, y, duration_ms]}``.

    All subjects' fixations of an image are concatenated. x, y are MATLAB pixel coordinates as stored
    (1-based: the centre of the top-left pixel is (1, 1)). `source` names the file in error messages.
    """
    mat = scipy.io.loadmat(io.BytesIO(mat_bytes), simplify_cells=True)
    if "fixations" not in mat:
        raise KeyError(f"{source}: no variable 'fixations' (found {sorted(k for k in mat if k[0] != '_')})")
    entries = mat["fixations"]
    entries = [entries] if isinstance(entries, dict) else list(entries)
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "img" not in entry or "subjects" not in entry:
            raise KeyError(f"{source}: fixations[{i}] must be a struct with fields 'img' and 'subjects'")
        subjects = entry["subjects"]
        subjects = [subjects] if isinstance(subjects, dict) else list(subjects)
        rows = []
        for j, subject in enumerate(subjects):
            try:
                cols = [np.atleast_1d(np.asarray(subject[k], dtype=np.float64)).ravel() for k in _FIELDS]
            except (KeyError, TypeError) as err:
                raise KeyError(f"{source}: fixations[{i}].subjects[{j}] needs fields {_FIELDS}") from err
            if len({c.size for c in cols}) != 1:
                raise ValueError(f"{source}: fixations[{i}].subjects[{j}]: {_FIELDS} differ in length")
            rows.append(np.stack(cols, axis=1))
        out[str(entry["img"])] = np.concatenate(rows) if rows else np.zeros((0, 3))
    return out


def fixation_maps(
    points: np.ndarray,
    size: tuple[int, int],
    sigma: float = DEFAULT_SIGMA_PX,
    duration_weighted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Human attention map and binary fixation map of one image.

    points: (n, 3) [x, y, duration_ms] in 1-based pixel coordinates (as in the .mat); size: (H, W).
    Each fixation adds 1 (or its duration, if `duration_weighted`) at its nearest pixel; the sum is blurred
    with a Gaussian of `sigma` px (zero padding: mass blurred off the image is dropped) and L1-normalised.
    Unweighted is the default, as in the standard saliency benchmarks (MIT, Bylinskii et al. 2019).
    Fixations outside the image are dropped. Returns human_map (H, W) float32 (all zeros when no fixation
    lands on the image) and fixations (H, W) bool.
    """
    h, w = size
    cols = np.rint(points[:, 0]).astype(np.int64) - 1
    rows = np.rint(points[:, 1]).astype(np.int64) - 1
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    weights = points[inside, 2] if duration_weighted else np.ones(int(inside.sum()))
    counts = np.zeros((h, w), dtype=np.float64)
    np.add.at(counts, (rows[inside], cols[inside]), weights)
    blurred = gaussian_filter(counts, sigma=sigma, mode="constant") if sigma > 0 else counts
    human = normalize_map(torch.from_numpy(blurred.clip(min=0)).float())
    return human, torch.from_numpy(counts > 0)


class OSIE(Dataset):
    """OSIE stimuli with human attention maps.

    root: the OSIE zip, a folder holding it (e.g. the shared data root), or the unpacked ``osie/`` folder.
    names: image file names (e.g. ``"1001.jpg"``) to use, default every stimulus present.
    A sample is a dict: ``image`` tv_tensors.Image uint8 (3, H, W), ``human_map`` float32 (H, W) summing to 1,
    ``fixations`` bool (H, W), ``name`` str; `transform`, if given, maps that dict to a new one (the maps are
    plain tensors, so a torchvision v2 transform leaves them alone: a geometric one must treat them itself).
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str] | None = None,
        sigma: float = DEFAULT_SIGMA_PX,
        duration_weighted: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.source = open_source(root, "osie", "osie*.zip", FIXATIONS_MAT)
        mat = f"{self.source.describe()}:{FIXATIONS_MAT}"
        self.fixations = parse_fixations(self.source.read(FIXATIONS_MAT), source=mat)
        available = sorted(
            p.rsplit("/", 1)[1] for p in self.source.files(STIMULI_DIR + "/") if p.lower().endswith(".jpg")
        )
        self.names = list(available if names is None else names)
        missing = [n for n in self.names if n not in self.fixations]
        if missing:
            raise KeyError(
                f"{mat}: no entry with img == {missing[0]!r} in 'fixations' ({len(missing)} missing)"
            )
        absent = sorted(set(self.names) - set(available))
        if absent:
            raise FileNotFoundError(f"{self.source.describe()}: no stimulus {STIMULI_DIR}/{absent[0]}")
        self.sigma = sigma
        self.duration_weighted = duration_weighted
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        relpath = f"{STIMULI_DIR}/{name}"
        image = decode_rgb(self.source.read(relpath), f"{self.source.describe()}:{relpath}")
        human, fixated = fixation_maps(
            self.fixations[name], tuple(image.shape[-2:]), self.sigma, self.duration_weighted
        )
        sample = {"image": image, "human_map": human, "fixations": fixated, "name": name}
        return self.transform(sample) if self.transform else sample
