"""Fig. 6 on PACS with the trained map (issue 28 item 5): the data cut for its GPU call
(scripts/carry_pacs_human.py) and the call's control flow (scripts/gpu_pacs_human.sh, scripts/gpu_pacs.sh)."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.io
from PIL import Image

from lfi.data.base import decode_rgb
from lfi.data.osie import parse_fixations

REPO = Path(__file__).resolve().parents[1]
ROWS = ["probe", "vit_full", "iq_gc", "ivit_vit", "centre", "shuffled"]  # the 2026-12-03 scoring's order


def carry() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "carry_pacs_human", REPO / "scripts" / "carry_pacs_human.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_grey_rgb_png_is_saved_grey_with_the_same_pixels_and_a_colour_one_is_kept() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.choice([0, 128, 255], size=(32, 32, 1)).astype(np.uint8), 3, axis=2)
    data = png(grey)
    smaller = carry().grey_png(data, "sketch/dog/a.png")
    assert len(smaller) < len(data) and Image.open(io.BytesIO(smaller)).mode == "L"
    assert bool((decode_rgb(smaller, "a") == decode_rgb(data, "a")).all())
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    data = png(colour)
    assert carry().grey_png(data, "sketch/dog/b.png") is data


def fixations_mat(names: list[str]) -> bytes:
    entries = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        subject = {"fix_x": np.array([10.0 + i, 40.0]), "fix_y": np.array([20.0, 30.0 - i]),
                   "fix_duration": np.array([200.0, 300.0 + i])}  # fmt: skip
        entries[i, 0] = {"img": name, "subjects": np.array([subject, subject], dtype=object)}
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"fixations": entries})
    return buffer.getvalue()


def test_the_fixations_are_cut_to_the_zipped_stimuli_and_stay_the_same() -> None:
    whole = fixations_mat(["1001.jpg", "1002.jpg", "1003.jpg", "1004.jpg"])
    cut = carry().cut_fixations(whole, {"1002.jpg", "1004.jpg"}, "x.mat")
    before, after = parse_fixations(whole), parse_fixations(cut)
    assert list(after) == ["1002.jpg", "1004.jpg"]
    assert all(np.array_equal(before[n], after[n]) for n in after)
    with pytest.raises(ValueError, match="x.mat: has fixations for 1 of the zip's 2 stimuli"):
        carry().cut_fixations(whole, {"1002.jpg", "9999.jpg"}, "x.mat")


def test_a_copied_zip_keeps_names_order_and_bytes_and_deflates_what_shrinks(tmp_path: Path) -> None:
    text = b"art_painting/dog/a.jpg 1\n" * 200
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(tmp_path / "in.zip", "w") as z:
        z.writestr("PACS/splits/a.txt", text)
        z.writestr("PACS/photo/dog/b.jpg", noise)
    assert carry().copy_zip(tmp_path / "in.zip", tmp_path / "out" / "out.zip", lambda n, d: d) == 0
    with zipfile.ZipFile(tmp_path / "out" / "out.zip") as z:
        assert z.namelist() == ["PACS/splits/a.txt", "PACS/photo/dog/b.jpg"]
        assert z.read("PACS/splits/a.txt") == text and z.read("PACS/photo/dog/b.jpg") == noise
        kinds = [i.compress_type for i in z.infolist()]
    assert kinds == [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]


def run_call(tmp_path: Path, sweep_rc: int) -> Path:
    """scripts/gpu_pacs_human.sh with a stand-in python3 that prints its arguments (into each part's log) and
    makes the run folders the sweep would (a model.safetensors and a metrics.json each); `sweep_rc`: the
    sweep's exit status."""
    for name in ("configs", "scripts", "lfi"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / "data" / "weights" / "deit_tiny_patch16_224.bf16.safetensors").write_bytes(b"")
    (tmp_path / "bin").mkdir()
    runs = " ".join(
        f"work/runs/study/pacs/{r}/test_domains=art_painting/seed{s}" for r in ROWS for s in range(3)
    )
    fake = (
        '#!/bin/sh\necho "$@"\ncase "$3" in sweep)\n'
        f"  for r in {runs}; do mkdir -p $r/checkpoints; : > $r/model.safetensors; : > $r/metrics.json; done\n"
        f"  exit {sweep_rc};;\nesac\nexit 0\n"
    )
    (tmp_path / "bin" / "python3").write_text(fake)
    (tmp_path / "bin" / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "WORK": "work"}  # fmt: skip
    # eval-human's output folder, which the stand-in does not write
    (tmp_path / "work" / "human" / "pacs").mkdir(parents=True)
    subprocess.run(["bash", "scripts/gpu_pacs_human.sh", "data"], cwd=tmp_path, env=env, check=True)
    return tmp_path / "out"


def test_the_call_retrains_the_art_painting_students_then_scores_them_in_the_old_order(
    tmp_path: Path,
) -> None:
    out = run_call(tmp_path, sweep_rc=0)
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "h.log", "pacs.tgz", "runs.tgz", "t.log"]
    train = (out / "t.log").read_text().splitlines()
    assert (
        train[0].startswith("-m lfi.cli extract --teacher vit ")
        and "--dataset pacs --split train" in train[0]
    )
    assert len(train) == 3 and "data.test_domains=[art_painting]" in train[1]  # one prepare: art_painting's
    assert "--set data.test_domains=[art_painting] --seeds 0,1,2 --jobs 9" in train[2]
    (score,) = (out / "h.log").read_text().splitlines()
    assert score.startswith("-m lfi.cli eval-human --run ") and score.endswith(
        "--data data --limit 200 --teacher vit --out work/human/pacs"
    )
    groups = [g.split() for g in score.split(" --data ")[0].split("--run ")[1:]]
    assert [[p.split("/")[4] for p in g] for g in groups] == [[r] * 3 for r in ROWS]
    assert [[p[-5:] for p in g] for g in groups] == [["seed0", "seed1", "seed2"]] * len(ROWS)
    with tarfile.open(out / "runs.tgz") as tar:
        names = tar.getnames()
    assert "study/pacs/ivit_vit/test_domains=art_painting/seed2/metrics.json" in names
    assert not [n for n in names if n.endswith(".safetensors") or "checkpoints" in n]


def test_the_call_scores_nothing_when_the_training_part_fails(tmp_path: Path) -> None:
    out = run_call(tmp_path, sweep_rc=1)
    assert not (out / "h.log").exists()
    assert "h not run: part t did not end" in (out / "env.txt").read_text()


def test_gpu_pacs_runs_the_four_domains_by_default(tmp_path: Path) -> None:
    (tmp_path / "stores" / "pacs_vit14").mkdir(parents=True)
    (tmp_path / "stores" / "pacs_vit14" / "store.json").write_text("{}")
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / "data" / "weights" / "deit_tiny_patch16_224.bf16.safetensors").write_bytes(b"")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    (tmp_path / "bin" / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    env.pop("DOMAINS", None)
    script = REPO / "scripts" / "gpu_pacs.sh"
    subprocess.run(["bash", str(script), "data", "work"], cwd=tmp_path, env=env, check=True)
    *prepares, sweep = (tmp_path / "calls").read_text().splitlines()
    assert [p.split("data.test_domains=")[1] for p in prepares] == [
        "[art_painting]", "[cartoon]", "[photo]", "[sketch]"
    ]  # fmt: skip
    assert "--set data.test_domains=[art_painting],[cartoon],[photo],[sketch] --seeds 0,1,2" in sweep
