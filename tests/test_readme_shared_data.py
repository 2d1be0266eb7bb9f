"""Every line of the README's "Run it on the shared data" block runs, in-process, on a tiny subset of the real data.

The subset keeps the real files' layout, so the README's lines run as written: a temporary `main/` working
directory (holding a link to `configs/`) sits beside `shared/data/`, in which `tiny-imagenet-200/` holds two
zips of the official inner layout (3 classes x 10 training images from train shard 00, 4 validation images per
class) and `weights/`, `osie/`, `coco/` link to the real folders. Each line is executed through
`lfi.cli.main(argv)` with only size-reducing arguments appended (later overrides win), so the test fails when a
README line stops working.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.data, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Run it on the shared data"
PREFIX = "tiny-imagenet-200/"
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 10, 4

#: appended to every classification `lfi train` line: 32 px (a 2x2 patch grid), one epoch, CPU, no GPU cache
TINY_CLASSIFICATION = [
    "data.img_size=32", "data.batch_size=4", "data.num_workers=0", "data.gpu_pipeline=false",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.enable_progress_bar=false",
]  # fmt: skip
#: appended to a detection `lfi train` line: the tiny DETR at 64 px, two train / val batches, four test images
TINY_DETECTION = [
    "model.size=tiny", "data.scales=[64]", "data.max_size=96", "data.batch_size=4", "data.num_workers=0",
    "data.test_limit=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]  # fmt: skip


def readme_lines() -> list[list[str]]:
    """The `lfi` lines of the section's bash block, comments dropped, as argv lists (without 'lfi')."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no '{SECTION}' section"
    block = text.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert all(argv[0] == "lfi" for argv in lines), f"every line of the block is an `lfi` command: {lines}"
    return [argv[1:] for argv in lines]


def make_tiny_tinyimagenet(real: Path, out: Path) -> None:
    """Two zips with TinyImageNet's inner layout holding a few real images (train shard 00 and the val zip)."""
    out.mkdir(parents=True)
    with zipfile.ZipFile(real / "tiny-imagenet-200-val.zip") as z:
        wnids = z.read(PREFIX + "wnids.txt").decode().split()[:CLASSES]
        words = [
            line
            for line in z.read(PREFIX + "words.txt").decode().splitlines()
            if line.split("\t")[0] in wnids
        ]
        annotations = z.read(PREFIX + "val/val_annotations.txt").decode().splitlines()
        val = [
            line for w in wnids for line in [a for a in annotations if a.split("\t")[1] == w][:VAL_PER_CLASS]
        ]
        with zipfile.ZipFile(out / "tiny-imagenet-200-val.zip", "w") as o:
            o.writestr(PREFIX + "wnids.txt", "\n".join(wnids) + "\n")
            o.writestr(PREFIX + "words.txt", "\n".join(words) + "\n")
            o.writestr(PREFIX + "val/val_annotations.txt", "\n".join(val) + "\n")
            for line in val:
                name = PREFIX + "val/images/" + line.split("\t")[0]
                o.writestr(name, z.read(name))
    with zipfile.ZipFile(real / "tiny-imagenet-200-train-00.zip") as z, \
            zipfile.ZipFile(out / "tiny-imagenet-200-train-00.zip", "w") as o:  # fmt: skip
        for w in wnids:
            names = [f"{w}_{i}.JPEG" for i in range(TRAIN_PER_CLASS)]
            boxes = z.read(f"{PREFIX}train/{w}/{w}_boxes.txt").decode().splitlines()
            kept = [line for line in boxes if line.split("\t")[0] in names]
            assert len(kept) == len(names), f"train shard 00 lacks boxes for some of {names}"
            o.writestr(f"{PREFIX}train/{w}/{w}_boxes.txt", "\n".join(kept) + "\n")
            for name in names:
                o.writestr(f"{PREFIX}train/{w}/images/{name}", z.read(f"{PREFIX}train/{w}/images/{name}"))


def shrink(argv: list[str]) -> list[str]:
    """The README line with only size-reducing arguments added (or, for --limit, lowered)."""
    argv = list(argv)
    command = argv[0]
    if command == "extract":
        return [*argv, "--workers", "0"]
    if command == "eval-human":
        assert "--limit" in argv, "the README's eval-human line should bound its run with --limit"
        argv[argv.index("--limit") + 1] = "2"
        return [*argv, "--batch-size", "2"]
    if command == "train":
        tiny = TINY_DETECTION if "/detection/" in argv[1] else TINY_CLASSIFICATION
        return [*argv, *tiny]
    return argv


@pytest.fixture
def workdir(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/main (cwd, with configs/) beside tmp/shared/data (tiny TinyImageNet, links to the real rest)."""
    data = tmp_path / "shared" / "data"
    make_tiny_tinyimagenet(shared_data / "tiny-imagenet-200", data / "tiny-imagenet-200")
    for name in ("weights", "osie", "coco"):
        if not (shared_data / name).exists():
            pytest.skip(f"real data lacks {shared_data / name}")
        os.symlink((shared_data / name).resolve(), data / name)
    main = tmp_path / "main"
    main.mkdir()
    os.symlink(REPO / "configs", main / "configs")
    monkeypatch.chdir(main)
    monkeypatch.setenv("LFI_CACHE", str(tmp_path / "cache"))
    return main


def test_every_readme_line_runs_on_a_tiny_subset(workdir: Path) -> None:
    from lfi.cli import main

    lines = readme_lines()
    commands = [" ".join(argv[:2]) if argv[0] == "store" else argv[0] for argv in lines]
    for needed in ("extract", "store verify", "train", "eval", "report", "curves", "eval-human"):
        assert needed in commands, f"the README block lost its `lfi {needed}` line"
    for argv in lines:
        tiny = shrink(argv)
        assert main(tiny) == 0, (
            f"README line failed: lfi {shlex.join(argv)}\n(run as: lfi {shlex.join(tiny)})"
        )
        check_outputs(workdir, argv)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def check_outputs(cwd: Path, argv: list[str]) -> None:
    """What each command promises to leave behind, in the README's working directory."""
    command = argv[0]
    if command == "extract":
        assert (cwd / _option(argv, "--out") / "store.json").is_file()
    elif command == "train":
        from lfi.config import load_config

        cfg = load_config(cwd / argv[1], [a for a in argv[2:] if "=" in a])
        metrics = json.loads((cwd / cfg.run_dir / "metrics.json").read_text())
        assert metrics["test"] and metrics["classes"], metrics
        assert (cwd / cfg.run_dir / "model.safetensors").is_file()
        if cfg.task == "classification":
            assert len(metrics["classes"]) == CLASSES
    elif command == "eval":
        assert json.loads((cwd / argv[1] / "eval_metrics.json").read_text())["test"]
    elif command == "report":
        report = (cwd / _option(argv, "--out")).read_text()
        assert all(f"`{run}`" in report for run in argv[1:] if run.startswith("runs/")), report
    elif command == "curves":
        out = cwd / _option(argv, "--out")
        assert out.with_suffix(".png").is_file() and out.with_suffix(".pdf").is_file()
    elif command == "eval-human":
        table = (cwd / _option(argv, "--out") / "human_alignment.csv").read_text()
        assert re.search(r"C_AGT", table), table


#: appended to the README's I-DETR line for the memory check: fewer images only (its model and sizes stay)
FEWER_IMAGES = [
    "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "data.test_limit=2", "data.num_workers=0",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]  # fmt: skip
#: the README's promise for its CPU lines
CPU_MEMORY_BYTES = 4 * 1024**3
#: the child runs one `lfi` line and reports its own peak resident memory (loader workers off: one process)
PEAK_RSS = (
    "import resource, sys; from lfi.cli import main; rc = main(sys.argv[1:]); "
    "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
)


def test_readme_detection_line_fits_a_cpu(shared_data: Path, tmp_path: Path) -> None:
    """Issue 33 item 3: the README's I-DETR line, as written (its model, batch and image sizes), trains on 2 CPU
    threads within 4 GB; only the number of images is cut (peak memory is one step's, whatever their number)."""
    detection = [argv for argv in readme_lines() if argv[0] == "train" and "/detection/" in argv[1]]
    assert len(detection) == 1, "the README block lost its I-DETR line"
    if not (shared_data / "coco").is_dir():
        pytest.skip(f"real data lacks {shared_data / 'coco'}")
    main = tmp_path / "main"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    os.symlink((shared_data / "coco").resolve(), tmp_path / "shared" / "data" / "coco")
    main.mkdir()
    os.symlink(REPO / "configs", main / "configs")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    argv = [*detection[0], *FEWER_IMAGES]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *argv], cwd=main, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"lfi {shlex.join(argv)} failed:\n{done.stderr[-3000:]}"
    peak = int(re.search(r"peak_rss_kb (\d+)", done.stdout).group(1)) * 1024  # Linux reports KiB
    assert peak < CPU_MEMORY_BYTES, f"lfi {shlex.join(argv)}: peak {peak / 1024**3:.2f} GiB, over 4 GiB"
