"""The data of one GPU call, Fig. 6 on PACS with the trained map (issue 28 item 5; scripts/gpu_pacs_human.sh),
cut from the shared data to fit the 64 MiB that travel with the working tree.

    python3 scripts/carry_pacs_human.py [--data ../shared/data] [--out .carry_pacs]

As they are, PACS-112.zip (44.0 MB), osie-dev.zip (15.4 MB) and the bf16 DeiT-Tiny (11.4 MB) are 70.8 MB, over
64 MiB before the tree. Written under OUT (git-ignored), with nothing the call reads left out:
- pacs/PACS-112.zip: every image and split list of PACS-112, all four domains, so the students' art_painting
  test figures are on Table 4's test set (the whole domain). Its 3,929 sketch PNGs are grey images saved as
  RGB; each is re-saved as an 8-bit grey PNG (17.0 -> 7.8 MB) only where it decodes to the same RGB pixels
  through the loaders' own decoder (`lfi.data.base.decode_rgb`), checked image by image, and is smaller;
  every other image keeps its bytes. A member is deflated where that makes it smaller (the split lists).
- osie/osie-dev.zip: the 200 stimuli and LICENSE as they are; data/eye/fixations.mat cut to the entries of
  those 200 stimuli (1.08 -> 0.3 MB), checked to give each of them the same fixations
  (`lfi.data.osie.parse_fixations`). Left out: the fixations of OSIE's other 500 images, whose stimuli are
  not in the zip, so nothing can score them.
- weights/deit_tiny_patch16_224.bf16.safetensors and imagenet_synset_words.txt, copied: the students' start,
  the `vit` teacher's maps of PACS and its C_VLM reference on OSIE (the teacher reads the synsets beside the
  weights).
Then it prints what would travel (OUT, plus the repository's tracked and untracked files less the tracked PNG
and .gz files under docs/ and benchmarks/results/, which are left out of the tree for device calls) and fails
when that is over 64 MiB, saying how much the results under docs/results/ and benchmarks/results/ weigh: the
call reads none of them, so they can be left out of its tree too.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from lfi.data.base import decode_rgb
from lfi.data.osie import FIXATIONS_MAT, STIMULI_DIR, parse_fixations

LIMIT = 64 * 2**20  # what travels with a device call: the working tree and the carried paths
PACS_ZIP, OSIE_ZIP = "pacs/PACS-112.zip", "osie/osie-dev.zip"
WEIGHTS = ("weights/deit_tiny_patch16_224.bf16.safetensors", "weights/imagenet_synset_words.txt")
LEFT_OUT = (("docs/", ".png"), ("docs/", ".gz"), ("benchmarks/results/", ".gz"))  # stripped for device calls
RESULTS = (("docs/results/", ""), ("benchmarks/results/", ""))  # not read by the call either


def grey_png(data: bytes, name: str) -> bytes:
    """`data` as an 8-bit grey PNG when its pixels are grey and it decodes to the same RGB, else `data`."""
    rgb = decode_rgb(data, name)
    if not (rgb[0] == rgb[1]).all() or not (rgb[1] == rgb[2]).all():
        return data
    buffer = io.BytesIO()
    Image.fromarray(rgb[0].numpy()).save(buffer, "PNG", optimize=True)
    grey = buffer.getvalue()
    if len(grey) >= len(data) or not bool((decode_rgb(grey, name) == rgb).all()):
        return data
    return grey


def write_member(out: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
    """One member, its name and date kept; deflated only where that makes it smaller."""
    smaller = len(zlib.compress(data, 9)) < len(data)
    member = zipfile.ZipInfo(info.filename, info.date_time)
    member.compress_type = zipfile.ZIP_DEFLATED if smaller else zipfile.ZIP_STORED
    out.writestr(member, data, compresslevel=9 if smaller else None)


def copy_zip(src: Path, dst: Path, change: Callable[[str, bytes], bytes]) -> int:
    """`src` rewritten to `dst` member by member, each through `change(name, bytes)`; members changed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    changed = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            new = change(info.filename, data)
            changed += new is not data
            write_member(zout, info, new)
    return changed


def cut_fixations(mat_bytes: bytes, names: set[str], origin: str) -> bytes:
    """fixations.mat with the entries of `names` alone (their order kept); ValueError if one is missing."""
    cells = scipy.io.loadmat(io.BytesIO(mat_bytes))["fixations"]
    keep = [i for i in range(cells.shape[0]) if str(cells[i, 0]["img"][0, 0][0]) in names]
    if len(keep) != len(names):
        raise ValueError(f"{origin}: has fixations for {len(keep)} of the zip's {len(names)} stimuli")
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"fixations": cells[keep]}, do_compression=True)
    cut = buffer.getvalue()
    before, after = parse_fixations(mat_bytes, origin), parse_fixations(cut, origin)
    if set(after) != names or any(not np.array_equal(before[n], after[n]) for n in names):
        raise ValueError(f"{origin}: the cut fixations.mat does not give the same fixations")
    return cut


def cut_osie(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as z:
        stimuli = {Path(n).name for n in z.namelist() if f"/{STIMULI_DIR}/" in n and n.endswith(".jpg")}
    mat = f"osie/{FIXATIONS_MAT}"

    def change(name: str, data: bytes) -> bytes:
        return cut_fixations(data, stimuli, f"{src}:{name}") if name == mat else data

    copy_zip(src, dst, change)


def travelling(repo: Path, left_out: tuple[tuple[str, str], ...]) -> int:
    """Bytes of the working tree that travel: tracked and untracked-not-ignored files, less the files under
    each (folder, suffix) of `left_out`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    kept = [n for n in listed if n and not any(n.startswith(d) and n.endswith(s) for d, s in left_out)]
    return sum((repo / n).stat().st_size for n in set(kept) if (repo / n).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(".carry_pacs"))
    args = parser.parse_args()
    sketches = copy_zip(
        args.data / PACS_ZIP, args.out / PACS_ZIP,
        lambda name, data: grey_png(data, name) if name.endswith(".png") else data,
    )  # fmt: skip
    print(f"{args.out / PACS_ZIP}: {sketches} PNGs re-saved as grey")
    cut_osie(args.data / OSIE_ZIP, args.out / OSIE_ZIP)
    for name in WEIGHTS:
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.data / name, args.out / name)
    carry = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    tree, bare = travelling(Path.cwd(), LEFT_OUT), travelling(Path.cwd(), LEFT_OUT + RESULTS)
    print(f"{args.out}: {carry / 1e6:.2f} MB; the tree without its PNG/.gz files: {tree / 1e6:.2f} MB; "
          f"together {(carry + tree) / 1e6:.2f} MB of {LIMIT / 1e6:.2f} MB (64 MiB)")  # fmt: skip
    if carry + tree > LIMIT:
        raise SystemExit(
            f"over 64 MiB by {(carry + tree - LIMIT) / 1e6:.2f} MB: the call would be refused. Leave "
            f"docs/results/ and benchmarks/results/ out of its tree too ({(tree - bare) / 1e6:.2f} MB; the call "
            f"reads neither): then {(carry + bare) / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
