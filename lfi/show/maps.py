"""Interaction maps over their images (paper Fig. 5): C_VFM, C_VLM, C_AGT, C_F and a human map side by side.

Independent of the model code: maps come in as tensors, one map (h, w), one per layer (layers, h, w) or one
per layer and head (layers, heads, h, w); `lfi.evaluate.maps.student_maps` makes the student's with
`lfi.maps.attention_to_grid`, the map that was trained.

Each map is drawn over its whole image: cell (i, j) of an (h, w) map covers the image's patch (i, j), so maps
of any grid line up with the image (the image must not have been cropped for the model). Each overlay is
scaled to its own maximum: the maps are distributions of very different peakiness, and a shared scale would
show the flat ones as blank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lfi.show.save import save_figure

CMAP = "jet"  # the usual attention-overlay colour map; blue (low) stays readable over photographs
ALPHA = 0.5
PANEL_INCHES = 2.2

Cell = tuple[str, torch.Tensor]  # (column title, map (h, w))


def select_map(
    m: torch.Tensor, layer: int | None = None, head: int | None = None, name: str = "map"
) -> torch.Tensor:
    """(h, w), (layers, h, w) or (layers, heads, h, w) -> (h, w): the given layer (None = mean over layers)
    and, for per-head maps, the given head.

    A 2-D map (e.g. C_VLM, one per image) is returned as it is whatever `layer` and `head` say. Per-head maps
    need a head: the student's map is `lfi.maps.attention_to_grid` over all heads (`lfi.evaluate.maps.student_maps`),
    which the mean of the per-head maps is not.
    """
    if m.dim() == 2:
        return m
    if m.dim() not in (3, 4):
        raise ValueError(
            f"{name}: expected (h, w), (layers, h, w) or (layers, heads, h, w), got {tuple(m.shape)}"
        )
    if (m.dim() == 4) != (head is not None):
        raise ValueError(
            f"{name}: head {head} of maps {tuple(m.shape)}; a head needs per-head maps (layers, heads, h, w), "
            "and per-head maps a head (their mean is not the student's map)"
        )
    for axis, index, what in ((0, layer, "layer"), (1, head, "head")):
        if index is not None and not -m.shape[axis] <= index < m.shape[axis]:
            raise ValueError(f"{name}: {what} {index} out of range (has {m.shape[axis]})")
    m = m.mean(0) if layer is None else m[layer]
    return m if head is None else m[head]


def _to_hwc(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float in [0, 1] for imshow."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image: expected (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    img = image.detach().cpu()
    img = img.float() / 255 if img.dtype == torch.uint8 else img.float().clamp(0, 1)
    return img.expand(3, -1, -1).permute(1, 2, 0)


def _overlay(ax: Axes, image: torch.Tensor, m: torch.Tensor | None) -> None:
    h_img, w_img = image.shape[:2]
    ax.imshow(image.numpy())
    if m is not None:
        m = m.detach().cpu().float()
        peak = m.max()
        # extent in pixel-centre coordinates: the map's cell edges land on the image's patch edges.
        ax.imshow(
            (m / peak if peak > 0 else m).numpy(),
            cmap=CMAP,
            alpha=ALPHA,
            vmin=0.0,
            vmax=1.0,
            extent=(-0.5, w_img - 0.5, h_img - 0.5, -0.5),
            interpolation="bilinear",
        )
    ax.set_xticks([])
    ax.set_yticks([])


def _draw(rows: Sequence[tuple[str, torch.Tensor, Sequence[Cell]]], title: str | None) -> Figure:
    """rows: (row label, image (H, W, 3), cells); the image itself fills the first column of every row."""
    ncols = 1 + max(len(cells) for _, _, cells in rows)
    fig = Figure(figsize=(PANEL_INCHES * ncols, PANEL_INCHES * len(rows) * 0.85), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    titled: set[int] = set()  # columns are titled once, at the first row that fills them
    for r, (label, image, cells) in enumerate(rows):
        _overlay(axes[r, 0], image, None)
        axes[r, 0].set_ylabel(label)
        for c, (name, m) in enumerate(cells, start=1):
            _overlay(axes[r, c], image, m)
            if c not in titled:
                axes[r, c].set_title(name)
                titled.add(c)
        for c in range(1 + len(cells), ncols):
            axes[r, c].set_visible(False)
    axes[0, 0].set_title("image")
    if title:
        fig.suptitle(title)
    return fig


def interaction_figure(
    image: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    human: torch.Tensor | None = None,
    per: Literal["mean", "layer", "head"] = "mean",
    layer: int = -1,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One image and its maps overlaid, one column per map (in `maps` order), then the human map if given.

    image: (3, H, W) uint8 or float in [0, 1]; maps: name -> (h, w), (layers, h, w) or, for per="head",
    (layers, heads, h, w), e.g. C_VFM, C_VLM, C_AGT, C_F; human: (H, W) or (h, w). per: "mean" (one row,
    averaged over layers), "layer" (a row per layer) or "head" (a row per head of `layer`). 2-D maps repeat
    in every row. Writes PNG and PDF when `path` is given.
    """
    img = _to_hwc(image)
    deep = [m for m in maps.values() if m.dim() > 2]
    if per == "head" and deep and deep[0].dim() != 4:
        raise ValueError(f"per='head' needs per-head maps (layers, heads, h, w), got {tuple(deep[0].shape)}")
    if per == "mean" or not deep:
        selections = [("mean", None, None)]
    elif per == "layer":
        selections = [(f"layer {i}", i, None) for i in range(deep[0].shape[0])]
    elif per == "head":
        selections = [(f"layer {layer}, head {i}", layer, i) for i in range(deep[0].shape[1])]
    else:
        raise ValueError(f"per must be 'mean', 'layer' or 'head', got {per!r}")
    rows = []
    for label, lay, hd in selections:
        cells = [(name, select_map(m, lay, hd, name)) for name, m in maps.items()]
        if human is not None:
            cells.append(("human", human))
        rows.append((label, img, cells))
    fig = _draw(rows, title)
    if path is not None:
        save_figure(fig, path)
    return fig


def interaction_grid(
    images: Sequence[torch.Tensor],
    maps: Sequence[Mapping[str, torch.Tensor]],
    humans: Sequence[torch.Tensor | None] | None = None,
    labels: Sequence[str] | None = None,
    layer: int | None = None,
    head: int | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Several images, one row each (the layout of Fig. 5): the image, then its maps, then its human map.

    images[i]: (3, H, W); maps[i]: name -> (h, w), (layers, h, w) or (layers, heads, h, w) (then give a head),
    the same names for every image; humans[i]: (H, W) or None; layer: which to show, None = mean over layers.
    Writes PNG and PDF given `path`.
    """
    if len(maps) != len(images) or (humans is not None and len(humans) != len(images)):
        raise ValueError(f"interaction_grid: {len(images)} images but {len(maps)} map dicts / humans differ")
    labels = labels if labels is not None else [f"image {i}" for i in range(len(images))]
    rows = []
    for i, (image, named) in enumerate(zip(images, maps, strict=True)):
        cells = [(name, select_map(m, layer, head, name)) for name, m in named.items()]
        if humans is not None and humans[i] is not None:
            cells.append(("human", humans[i]))
        rows.append((labels[i], _to_hwc(image), cells))
    fig = _draw(rows, title)
    if path is not None:
        save_figure(fig, path)
    return fig
