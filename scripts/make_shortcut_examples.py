"""A PNG grid of the shortcut test's images (lfi.data.shortcut): per class, one training image (cue by the
rule: its own colour at rate p), its "ood" test counterpart (cue independent of the class) and "clean" (no
cue), with the object's box outlined in white.

    .venv/bin/python scripts/make_shortcut_examples.py --data ../shared/data --out shortcut_examples.png
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from lfi.data.shortcut import DEFAULT_WIDTH, shortcut_splits
from lfi.data.tinyimagenet import TinyImageNet


def tile(sample: dict, scale: int) -> Image.Image:
    img = Image.fromarray(sample["image"].permute(1, 2, 0).numpy()).resize(
        (64 * scale, 64 * scale), Image.NEAREST
    )
    x0, y0, x1, y1 = (v * scale for v in sample["boxes"][0].tolist())
    ImageDraw.Draw(img).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255), width=max(1, scale // 2))
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="shortcut_examples.png")
    parser.add_argument("--classes", type=int, default=20, help="data.classes_subset")
    parser.add_argument("--agreement", type=float, default=0.95, help="data.shortcut")
    parser.add_argument("--width", type=float, default=DEFAULT_WIDTH, help="data.shortcut_width")
    parser.add_argument("--show", type=int, default=8, help="classes shown (columns)")
    parser.add_argument("--scale", type=int, default=3)
    args = parser.parse_args()
    train, val = TinyImageNet(args.data, "train"), TinyImageNet(args.data, "val")
    tr, _, tests = shortcut_splits(train, val, args.classes, args.agreement, args.width)
    rows = [tr, tests["id"], tests["ood"], tests["clean"]]
    side, pad = 64 * args.scale, 4
    grid = Image.new("RGB", (args.show * (side + pad) + pad, len(rows) * (side + pad) + pad), (255, 255, 255))
    for r, ds in enumerate(rows):
        firsts = {}
        for i, label in enumerate(ds.labels):
            firsts.setdefault(label, i)
        for c in range(args.show):
            grid.paste(tile(ds[firsts[c]], args.scale), (pad + c * (side + pad), pad + r * (side + pad)))
    grid.save(args.out)
    names = ", ".join(tr.classes[: args.show])
    print(f"{args.out}: rows train / id / ood / clean, columns the classes {names}")


if __name__ == "__main__":
    main()
