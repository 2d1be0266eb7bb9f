"""A store that an interrupted `lfi extract` left behind is refused at set-up, naming how many training images
have no map and how to finish it, not by a KeyError minutes into the first epoch; extracting again resumes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lfi.cli import main
from tests.train.test_skip_failed import TRAIN, photos  # noqa: F401  (the fixture: class folders, one bad PNG)

EXTRACT = ["extract", "--teacher", "oracle", "--dataset", "imagefolder", "--data", "photos", "--split", "train",
           "--out", "store", "--grid", "4", "--on-error", "skip", "--workers", "0"]  # fmt: skip


def test_an_interrupted_store_is_refused_before_training_then_resumed(
    photos: Path,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    shutil.rmtree(photos / "store")
    assert main([*EXTRACT, "--limit", "4"]) == 0  # as if stopped after 4 of the 9 images
    capsys.readouterr()
    assert main(["train", *TRAIN, "data.skip_failed=true"]) == 2
    err = capsys.readouterr().err
    assert "teacher.store store holds no map for 5 of the 9 training images" in err, err
    assert "it resumes" in err and not (photos / "runs/own/imagefolder/metrics.json").exists()
    assert main(EXTRACT) == 0  # resumes: the 4 stored images are not extracted again
    with pytest.warns(UserWarning, match="1 images listed in store/failed.jsonl left out"):
        assert main(["train", *TRAIN, "data.skip_failed=true"]) == 0
    assert (photos / "runs/own/imagefolder/metrics.json").exists()
