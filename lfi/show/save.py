"""Write a figure as PNG (for looking at, and for README links) and PDF (for papers) in one go.

Figures in `lfi.show` are built as bare `matplotlib.figure.Figure` objects, never through pyplot: no GUI
backend is needed on headless machines and no global figure registry keeps them alive.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

FORMATS = (".png", ".pdf")


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> list[Path]:
    """Write `fig` to `path` with suffix .png and with .pdf (a suffix of `path` is replaced); returns both."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in FORMATS:
        out = path.with_suffix(suffix)
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
        written.append(out)
    return written


def to_palette(png: str | Path) -> Path:
    """Re-save a PNG with a 256-colour palette, about 5x smaller and no visible loss for maps: what docs commit
    (the repository travels to a lent GPU with the data). Re-saving a palette PNG keeps every pixel's colour."""
    from PIL import Image

    Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
    return Path(png)
