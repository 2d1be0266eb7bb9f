"""A static, self-contained page to browse interaction maps image by image (`lfi viz --html OUT_DIR`).

`write_page` writes ``OUT_DIR/index.html`` and one PNG per image and map under ``OUT_DIR/img/``: the image,
then each map (C_VLM, C_VFM, C_AGT, C_F, ...) drawn over it, each overlay scaled to its own maximum as in
`lfi.show.maps`. Every card shows the prediction (top class and its probability) and the true label where
known. A text box filters the cards by class name (a card stays when its true label or its predicted class
contains the text, case-insensitive); the filter can also be given in the address, ``index.html?class=dog``.
Plain HTML, CSS and a few lines of JavaScript: no network, no CDN, opens from file://.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from lfi.show.maps import ALPHA, CMAP

INDEX = "index.html"
IMG_DIR = "img"


@dataclass
class Card:
    """One image of the page. image: uint8 (3, H, W); maps: {title: (h, w)} over the whole image (drawn in
    this order); prediction: top class name and its probability; label: the true class name, None if unknown."""

    name: str
    image: torch.Tensor
    maps: Mapping[str, torch.Tensor]
    prediction: str
    probability: float
    label: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def overlay(image: torch.Tensor, m: torch.Tensor, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """uint8 (3, H, W) image and an (h, w) map over it -> (H, W, 3) uint8: the map bilinearly resized to the
    image, scaled to its own maximum, coloured with `cmap` and blended with weight `alpha`."""
    h, w = image.shape[-2:]
    m = m.detach().float().cpu()
    up = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
    peak = up.max()
    up = up / peak if peak > 0 else up
    colour = colormaps[cmap](up.numpy())[..., :3]
    base = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64) / 255
    blended = ((1 - alpha) * base + alpha * colour).clip(0, 1)
    return (blended * 255).round().astype(np.uint8)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, format="PNG", optimize=True)


_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
header { position: sticky; top: 0; background: #fafafa; padding: .5em 0; }
#filter { font-size: 1em; padding: .3em; width: 20em; }
.card { background: white; border: 1px solid #ccc; border-radius: 6px; margin: .8em 0; padding: .6em; }
.card[hidden] { display: none; }
.card h2 { font-size: 1em; margin: 0 0 .4em 0; }
.row { display: flex; flex-wrap: wrap; gap: .5em; }
figure { margin: 0; text-align: center; }
figure img { height: 160px; image-rendering: auto; border: 1px solid #ddd; }
figcaption { font-size: .8em; max-width: 220px; }
.wrong { color: #b00; } .right { color: #070; }
"""

_SCRIPT = """
(function () {
  var box = document.getElementById('filter');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var count = document.getElementById('count');
  function apply() {
    var q = box.value.trim().toLowerCase();
    var shown = 0;
    cards.forEach(function (c) {
      var keep = !q || c.getAttribute('data-classes').indexOf(q) >= 0;
      c.hidden = !keep;
      if (keep) { shown += 1; }
    });
    count.textContent = shown + ' of ' + cards.length + ' images';
    document.body.setAttribute('data-shown', String(shown));
  }
  box.addEventListener('input', apply);
  var given = new URLSearchParams(window.location.search).get('class');
  if (given !== null) { box.value = given; }
  apply();
})();
"""


def write_page(cards: Sequence[Card], out_dir: str | Path, title: str = "Interaction maps") -> Path:
    """Write the page (module doc) for `cards` into `out_dir` (created); returns the path of index.html."""
    out = Path(out_dir)
    (out / IMG_DIR).mkdir(parents=True, exist_ok=True)
    body = []
    for i, card in enumerate(cards):
        stem = f"{i:04d}_{_slug(Path(card.name).stem)}"
        figures = []
        image_file = f"{IMG_DIR}/{stem}.png"
        _save_png(card.image.detach().cpu().permute(1, 2, 0).numpy(), out / image_file)
        figures.append((image_file, "image"))
        for j, (map_title, m) in enumerate(card.maps.items()):
            map_file = f"{IMG_DIR}/{stem}_{j}_{_slug(map_title)}.png"
            _save_png(overlay(card.image, m), out / map_file)
            figures.append((map_file, map_title))
        label = card.label if card.label is not None else "unknown"
        verdict = "" if card.label is None else (" right" if card.label == card.prediction else " wrong")
        classes = " | ".join(c.lower() for c in (card.label, card.prediction) if c is not None)
        figs = "\n".join(
            f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}">'
            f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            for src, cap in figures
        )
        extra = "".join(f"; {html.escape(k)}: {html.escape(v)}" for k, v in card.extra.items())
        body.append(
            f'<section class="card" data-classes="{html.escape(classes)}" data-label="{html.escape(label)}" '
            f'data-prediction="{html.escape(card.prediction)}">\n'
            f"<h2>{html.escape(card.name)}</h2>\n"
            f'<p>true label: <b class="label">{html.escape(label)}</b>; prediction: '
            f'<b class="prediction{verdict}">{html.escape(card.prediction)}</b> '
            f'(<span class="probability">{card.probability:.1%}</span>){extra}</p>\n'
            f'<div class="row">\n{figs}\n</div>\n</section>'
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>\n"
        '<label>class filter: <input id="filter" type="search" placeholder="class name (true or predicted)" '
        'autocomplete="off"></label> <span id="count"></span></header>\n'
        f'<main id="cards" data-total="{len(cards)}">\n' + "\n".join(body) + "\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
    index = out / INDEX
    index.write_text(page, encoding="utf-8")
    return index
