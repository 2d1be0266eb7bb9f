"""Extraction loop: writes every sample once, resumes after a crash, shards over ranks, counts empties."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from lfi.cli.extract import register
from lfi.extract.oracle import OracleTeacher
from lfi.extract.run import extract
from lfi.extract.teacher import Sample, TeacherOutput
from lfi.store.shards import InteractionStore, StoreMetadataError, store_arrays


def _samples(n: int = 13) -> list[dict]:
    """In-test dataset in the adapter format; every 4th image has no box (an empty map)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        image = torch.randint(0, 256, (3, 24 + i, 32), dtype=torch.uint8, generator=g)
        boxes = torch.zeros(0, 4) if i % 4 == 3 else torch.tensor([[2.0 + i, 3.0, 20.5, 17.0 + i / 2]])
        out.append(
            {
                "relpath": f"imgs/{i}.png",
                "data": image.numpy().tobytes(),
                "image": image,
                "label": i % 2,
                "class_name": "thing",
                "boxes": boxes,
            }
        )
    return out


class _Crashing(OracleTeacher):
    """Raises on its `crash_at`-th call, like a process killed mid-run."""

    def __init__(self, crash_at: int) -> None:
        super().__init__(grid=(6, 6))
        self.calls, self.crash_at = 0, crash_at

    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated kill")
        return super().__call__(batch)


def _content(root: Path) -> dict[str, np.ndarray]:
    return store_arrays(InteractionStore(root))


def test_uninterrupted_run_and_empty_count(tmp_path: Path) -> None:
    report = extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path, batch_size=4, progress=False)
    counts = (report.assigned, report.written, report.skipped, report.empty, report.invalid)
    assert counts == (13, 13, 0, 3, 3)
    store = InteractionStore(tmp_path, expect={"teacher": "oracle", "empty_policy": "skip", "grid": [6, 6]})
    assert len(store) == 13 and store.info()["empty"] == 3
    rec = store[store.keys()[0]]
    assert rec.hw == (24, 32) and rec.valid and rec.map.sum().item() == pytest.approx(1.0)
    again = extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path, batch_size=4, progress=False)
    assert (again.written, again.skipped) == (0, 13)
    uniform = extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path / "u", empty="uniform", progress=False)
    assert (uniform.empty, uniform.invalid) == (3, 0)


def test_resume_after_crash_equals_uninterrupted(tmp_path: Path) -> None:
    extract(
        OracleTeacher(grid=(6, 6)), _samples(), tmp_path / "ref", batch_size=2, shard_size=3, progress=False
    )
    with pytest.raises(RuntimeError, match="simulated kill"):
        extract(
            _Crashing(crash_at=4), _samples(), tmp_path / "run", batch_size=2, shard_size=3, progress=False
        )
    partial = InteractionStore(tmp_path / "run")
    assert 0 < len(partial) < 13
    report = extract(
        OracleTeacher(grid=(6, 6)), _samples(), tmp_path / "run", batch_size=2, shard_size=3, progress=False
    )
    assert report.skipped == len(partial) and report.written == 13 - len(partial)
    ref, run = _content(tmp_path / "ref"), _content(tmp_path / "run")
    for name in ref:
        np.testing.assert_array_equal(ref[name], run[name])
    assert InteractionStore(tmp_path / "run").verify().ok


def test_ranks_split_the_work(tmp_path: Path) -> None:
    reports = [
        extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path, rank=r, world_size=2, progress=False)
        for r in (0, 1)
    ]
    assert [r.written for r in reports] == [7, 6]
    store = InteractionStore(tmp_path)
    assert len(store) == 13 and store.info()["writers"] == {"r000": 7, "r001": 6}
    assert store.verify().ok


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    extract(OracleTeacher(grid=(6, 6)), _samples(3), tmp_path, progress=False)
    with pytest.raises(StoreMetadataError, match="combine"):
        extract(OracleTeacher(grid=(6, 6), combine="sum"), _samples(3), tmp_path, progress=False)


def test_sample_without_key_fields_is_an_error(tmp_path: Path) -> None:
    bad = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "boxes": torch.zeros(0, 4)}]
    with pytest.raises(KeyError, match="relpath"):
        extract(OracleTeacher(grid=(2, 2)), bad, tmp_path, progress=False)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lfi")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.data
def test_cli_extract_info_verify_on_tinyimagenet(shared_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "store"
    common = ["--data", str(shared_data), "--dataset", "tinyimagenet", "--split", "val"]
    argv = f"extract --teacher oracle --out {out} --limit 12 --grid 7 --batch-size 5 --workers 0".split()
    assert _cli(*argv, *common) == 0
    assert "12 written" in capsys.readouterr().out
    assert _cli("store", "info", str(out), "--json") == 0
    assert '"records": 12' in capsys.readouterr().out
    assert _cli("store", "verify", str(out), *common, "--limit", "12") == 0
    assert _cli("store", "verify", str(out), *common, "--limit", "13") == 1
    assert (
        "missing key (re-run `lfi extract`, which resumes): val/images/val_12.JPEG#"
        in capsys.readouterr().out
    )


class _Slow(OracleTeacher):
    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        import time

        time.sleep(1.0)  # a wide window between shards, so the kill lands mid-run even on a loaded machine
        return super().__call__(batch)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_extract_run import _Slow, _samples\n"
        "from lfi.extract.run import extract\n"
        "extract(_Slow(grid=(6, 6)), _samples(), sys.argv[1], batch_size=1, shard_size=2, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")])
    shards = tmp_path / "run" / "shards"
    deadline = time.monotonic() + 600  # the child's torch import alone can take a minute under load
    while time.monotonic() < deadline and len(list(shards.glob("r*.safetensors"))) < 2:
        time.sleep(0.05)
    assert len(list(shards.glob("r*.safetensors"))) >= 2, "the child wrote no shards in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = len(InteractionStore(tmp_path / "run"))
    assert 0 < killed < 13
    extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path / "run", batch_size=3, progress=False)
    extract(OracleTeacher(grid=(6, 6)), _samples(), tmp_path / "ref", batch_size=3, progress=False)
    ref, run = _content(tmp_path / "ref"), _content(tmp_path / "run")
    for name in ref:
        np.testing.assert_array_equal(ref[name], run[name])
    assert InteractionStore(tmp_path / "run").verify().ok


@pytest.mark.data
@pytest.mark.parametrize(
    ("dataset", "extra"), [("tinyimagenet", ["--split", "val"]), ("pacs", ["--domains", "sketch"])]
)
def test_cli_extract_vit_teacher_on_real_data(
    shared_data: Path, tmp_path: Path, capsys, dataset, extra
) -> None:  # noqa: ANN001
    """The ViT teacher (shared real DeiT-Tiny) through `lfi extract` on real TinyImageNet and PACS images."""
    out = tmp_path / "store"
    argv = f"extract --teacher vit --out {out} --limit 4 --batch-size 2 --workers 0 --device cpu".split()
    assert _cli(*argv, "--data", str(shared_data), "--dataset", dataset, *extra) == 0
    assert "4 written" in capsys.readouterr().out
    store = InteractionStore(out)
    assert len(store) == 4 and store.metadata["teacher"] == "vit"
    records = [store[key] for key in store.keys()]  # noqa: SIM118 (a store is not a dict: no __iter__)
    assert all(r.valid and torch.isclose(r.map.sum(), torch.tensor(1.0)) for r in records)


def test_oracle_on_a_dataset_without_boxes_is_refused(tmp_path: Path) -> None:
    argv = [
        "extract",
        "--teacher",
        "oracle",
        "--data",
        str(tmp_path),
        "--dataset",
        "pacs",
        "--out",
        str(tmp_path / "s"),
    ]
    with pytest.raises(ValueError, match="'pacs' has no boxes or masks"):
        _cli(*argv)
    with pytest.raises(ValueError, match="'tinyimagenet' has boxes"):
        _cli(*argv[:6], "tinyimagenet", *argv[7:], "--oracle-source", "masks")


class _NanFor(OracleTeacher):
    """Returns a NaN map for the image at `relpath` (a teacher bug on one image)."""

    def __init__(self, relpath: str) -> None:
        super().__init__(grid=(6, 6))
        self.relpath = relpath

    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        out = super().__call__(batch)
        for i, sample in enumerate(batch):
            if sample["relpath"] == self.relpath:
                out.fore[i, 0, 0] = float("nan")
        return out


def test_nan_map_stops_or_is_listed_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"non-finite maps \(NaN or Inf\) for \['imgs/2\.png#"):
        extract(_NanFor("imgs/2.png"), _samples(), tmp_path / "strict", batch_size=4, progress=False)
    report = extract(
        _NanFor("imgs/2.png"), _samples(), tmp_path / "s", batch_size=4, on_error="skip", progress=False
    )
    assert (report.written, report.failed) == (12, 1) and "1 FAILED" in report.summary()
    (entry,) = [json.loads(line) for line in (tmp_path / "s" / "failed.jsonl").read_text().splitlines()]
    assert entry["key"].startswith("imgs/2.png#") and entry["path"] == "imgs/2.png" and entry["index"] == 2
    assert "non-finite" in entry["error"] and len(InteractionStore(tmp_path / "s")) == 12


class _Pause(OracleTeacher):
    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        threading.Event().wait(0.01)  # let the other writer run in between
        return super().__call__(batch)


def test_two_extractions_on_one_store_never_duplicate(tmp_path: Path) -> None:
    """A job launched twice on one store: same rank, same writer name, same images, at the same time."""
    reports = []

    def run() -> None:
        reports.append(
            extract(_Pause(grid=(6, 6)), _samples(), tmp_path, batch_size=1, shard_size=1, progress=False)
        )

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.written for r in reports) == 13 and sum(r.skipped for r in reports) == 13
    store = InteractionStore(tmp_path)
    assert len(store) == 13 and store.info()["duplicates"] == 0 and store.verify().ok


def _tiny_imagenet(root: Path, bad: int) -> Path:
    """A 3-image TinyImageNet val folder whose image `bad` is not an image."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("n001\n")
    lines = []
    for i in range(3):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (10 * i, 0, 0)).save(buf, format="PNG")
        (folder / "val" / "images" / f"val_{i}.JPEG").write_bytes(b"garbage" if i == bad else buf.getvalue())
        lines.append(f"val_{i}.JPEG\tn001\t4\t4\t40\t40")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cli_on_error_skip_lists_the_bad_image_and_finishes(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    data = _tiny_imagenet(tmp_path / "data", bad=1)
    argv = [
        "extract",
        "--teacher",
        "oracle",
        "--data",
        str(data),
        "--dataset",
        "tinyimagenet",
        "--split",
        "val",
    ]
    with pytest.raises(ValueError, match=r"val/images/val_1\.JPEG: cannot decode.*--on-error skip"):
        _cli(*argv, "--out", str(tmp_path / "strict"), "--workers", "0", "--grid", "4")
    out = tmp_path / "store"
    assert _cli(*argv, "--out", str(out), "--workers", "1", "--grid", "4", "--on-error", "skip") == 0
    assert "2 written" in capsys.readouterr().out
    (entry,) = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert entry["path"].endswith("val/images/val_1.JPEG") and entry["index"] == 1 and entry["key"] is None
    assert _cli("store", "info", str(out)) == 0
    assert "1 images failed at extraction" in capsys.readouterr().out
    assert _cli("store", "verify", str(out)) == 0  # the stored records are sound; the failure is listed
    assert "image that failed at extraction" in capsys.readouterr().out


def test_cli_store_compact(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    extract(OracleTeacher(grid=(6, 6)), _samples(4), tmp_path, progress=False)
    (tmp_path / "shards" / ".tmp-r000-dead.safetensors").write_bytes(b"x")
    assert _cli("store", "compact", str(tmp_path)) == 0
    assert "removed 0 duplicate records and 1 temporary files" in capsys.readouterr().out


def test_cli_constants_match_the_library() -> None:
    """lfi.cli.extract spells these out (it imports no torch); they must agree."""
    from lfi.cli import extract as cli
    from lfi.extract import run, teacher

    assert cli.EMPTY_POLICIES == teacher.EMPTY_POLICIES and cli.ON_ERROR == run.ON_ERROR
