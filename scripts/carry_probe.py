"""What one GPU call of issue 31's probe costs (scripts/gpu_probe_costs.sh) carries, cut to fit the 64 MiB that
travel with the working tree.

    python3 scripts/carry_probe.py [--data ../shared/data] [--out .carry_cut] [--val-images 1000]
        [--tree .old 1351981 lfi configs benchmarks/train_throughput.py benchmarks/profiling.py]
        [--tree .mid f5cfe4d lfi configs benchmarks/train_throughput.py benchmarks/profiling.py]
        [--tree .gd b4d264f lfi benchmarks/attention_kernels.py]

Written under OUT (git-ignored): tiny-imagenet-200/tiny-imagenet-200-train-00.zip as it is (a hard link where
the file system allows), the val zip cut to its first N images (val_annotations.txt cut to the same images;
wnids.txt and words.txt as they are: the benchmark reads the val images as its test set, after the timed fit),
and the bf16 DeiT-Tiny with the synsets beside it. Each --tree DIR COMMIT PATH...: those paths of an older commit
(`git archive`), extracted into DIR, to time beside this tree. py-spy's wheel goes in .whl/ by hand
(`pip download py-spy --no-deps -d .whl`). Then it prints what would travel (OUT, the trees, .whl/ and the
whole working tree) and fails over 64 MiB.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from carry_pacs_human import LIMIT, travelling

TRAIN, VAL = "tiny-imagenet-200/tiny-imagenet-200-train-00.zip", "tiny-imagenet-200/tiny-imagenet-200-val.zip"
WEIGHTS = ("weights/deit_tiny_patch16_224.bf16.safetensors", "weights/imagenet_synset_words.txt")
ANNOTATIONS = "tiny-imagenet-200/val/val_annotations.txt"


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


def cut_val(src: Path, dst: Path, images: int) -> None:
    """The val zip with its first `images` images (val_0 ... val_{images-1}) and their annotation lines."""
    keep = {f"val_{i}.JPEG" for i in range(images)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == ANNOTATIONS:
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split("\t", 1)[0] in keep).encode()
            elif "/val/images/" in info.filename and Path(info.filename).name not in keep:
                continue
            zout.writestr(info, data, compress_type=info.compress_type)
    with zipfile.ZipFile(dst) as z:
        found = sum("/val/images/" in n for n in z.namelist())
        annotated = len(z.read(ANNOTATIONS).decode().splitlines())
    if found != images or annotated != images:
        sys.exit(f"{dst}: {found} images and {annotated} annotation lines, expected {images} of each")


def extract_tree(repo: Path, out: Path, commit: str, paths: list[str]) -> None:
    archive = subprocess.run(
        ["git", "archive", commit, *paths], cwd=repo, check=True, capture_output=True
    ).stdout
    shutil.rmtree(out, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=repo / ".carry_cut")
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--tree", nargs="+", action="append", default=[], metavar="DIR COMMIT PATH")
    args = parser.parse_args()
    link_or_copy(args.data / TRAIN, args.out / TRAIN)
    cut_val(args.data / VAL, args.out / VAL, args.val_images)
    for name in WEIGHTS:
        link_or_copy(args.data / name, args.out / name)
    folders = [args.out, repo / ".whl"]
    for folder, commit, *paths in args.tree:
        extract_tree(repo, Path(folder), commit, paths)
        folders.append(Path(folder))
    carried = sum(folder_bytes(f) for f in folders)
    tree = travelling(repo, ())  # the whole tree: nothing needs leaving out
    names = ", ".join(f"{f} {folder_bytes(f) / 1e6:.2f}" for f in folders)
    print(f"carried: {names} MB; working tree {tree / 1e6:.2f} MB; together {(carried + tree) / 1e6:.2f} MB "
          f"of {LIMIT / 1e6:.2f} MB (64 MiB)")  # fmt: skip
    if carried + tree > LIMIT:
        sys.exit(
            f"over 64 MiB by {(carried + tree - LIMIT) / 1e6:.2f} MB: cut --val-images or leave a tree out"
        )


if __name__ == "__main__":
    main()
