"""Issue 33 item 7: a corrupt image during training is one line naming the file (not a DataLoader worker's
traceback), and `data.skip_failed=true` leaves out the files `lfi extract --on-error skip` listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfi.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN = [
    str(REPO / "configs/own/imagefolder.yaml"), "data.train_dir=photos/train", "data.val_dir=photos/val",
    "teacher.name=oracle", "teacher.store=store", "model.checkpoint=null", "model.freeze_backbone=false",
    "data.img_size=32", "model.timm_kwargs={depth: 1}", "trainer.max_epochs=1", "data.batch_size=4",
    "data.num_workers=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
]  # fmt: skip


@pytest.fixture
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Class folders with boxes.txt (for the oracle), one truncated PNG among the training images."""
    rng = np.random.default_rng(0)
    boxes = []
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / "photos" / split / c).mkdir(parents=True)
            for i in range(4):
                pixels = (rng.random((40, 40, 3)) * 255).astype("uint8")
                Image.fromarray(pixels).save(tmp_path / "photos" / split / c / f"{i}.png")
                boxes.append(f"{c}/{i}.png 5 5 30 30")
    (tmp_path / "photos/train/dog/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "photos/train/boxes.txt").write_text("\n".join([*boxes[:8], "dog/bad.png 1 1 5 5"]) + "\n")
    monkeypatch.chdir(tmp_path)
    argv = [
        "extract",
        "--teacher",
        "oracle",
        "--dataset",
        "imagefolder",
        "--data",
        "photos",
        "--split",
        "train",
    ]
    assert main([*argv, "--out", "store", "--grid", "4", "--on-error", "skip", "--workers", "0"]) == 0
    return tmp_path


def test_a_corrupt_image_is_one_line_naming_it(photos: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *TRAIN]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lfi train: error")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert (
        "photos/train:dog/bad.png: cannot decode as an image" in err[0] and "data.skip_failed=true" in err[0]
    )


def test_skip_failed_leaves_out_the_files_extract_listed(photos: Path) -> None:
    assert "dog/bad.png" in (photos / "store/failed.jsonl").read_text()
    with pytest.warns(UserWarning, match="1 images listed in store/failed.jsonl left out"):
        assert main(["train", *TRAIN, "data.skip_failed=true"]) == 0
    metrics = json.loads((photos / "runs/own/imagefolder/metrics.json").read_text())
    assert metrics["global_step"] == 2  # 8 readable images in batches of 4


def test_skip_failed_reaches_through_a_held_out_split(photos: Path) -> None:
    from lfi.config import load_config
    from lfi.train.data import build_data, relpaths

    cfg = load_config(
        TRAIN[0], [*TRAIN[1:], "data.val_dir=null", "data.val_fraction=0.25", "data.skip_failed=true"]
    )
    with pytest.warns(UserWarning, match="data.skip_failed: 1 images"):
        data = build_data(cfg)
    names = relpaths(data.train) + relpaths(data.val)
    assert sorted(names) == sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(4))


def test_skip_failed_needs_a_store() -> None:
    from lfi.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="'data.skip_failed' .* set 'teacher.store'"):
        load_config(None, ["data.skip_failed=true"])
