"""Interaction store: keys, round trip, metadata checks, concurrent writers, digests, verify, compact,
DataLoader reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lfi.data.keys import image_key
from lfi.store.layout import SHARD_DIR, summarize
from lfi.store.shards import (
    InteractionStore,
    Record,
    StoreCorruptError,
    StoreMetadataError,
    StoreWriter,
    _commit_shard,
    compact,
    store_arrays,
)

META = {"teacher": "test", "grid": [3, 4], "checkpoint": "none"}


def _record(i: int, valid: bool = True) -> Record:
    m = torch.zeros(3, 4)
    if valid:
        m[i % 3, i % 4] = 0.75
        m[0, 0] += 0.25
    return Record(f"img/{i}.jpg#{i:012x}", m, (30 + i, 40), valid, not valid, {"i": i})


def _write(root: Path, n: int, writer: str = "r000", shard_size: int = 4, start: int = 0) -> None:
    with StoreWriter(root, META, writer=writer, shard_size=shard_size) as w:
        for i in range(start, start + n):
            w.add(_record(i, valid=i % 5 != 4))


def test_image_key_is_stable_and_content_sensitive() -> None:
    key = image_key("val/images/val_0.JPEG", b"abc")
    assert key == image_key("val\\images\\val_0.JPEG", b"abc")
    assert key.startswith("val/images/val_0.JPEG#") and len(key.split("#")[1]) == 12
    assert key != image_key("val/images/val_0.JPEG", b"abd")
    for bad in ("/abs/x.jpg", "../x.jpg", ""):
        with pytest.raises(ValueError, match="dataset-relative"):
            image_key(bad, b"")


def test_round_trip(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    store = InteractionStore(tmp_path, expect={"teacher": "test", "grid": (3, 4)})
    assert len(store) == 10 and store.grid == (3, 4)
    for i in range(10):
        rec = store[_record(i).key]
        torch.testing.assert_close(rec.map, _record(i, valid=i % 5 != 4).map)
        assert rec.hw == (30 + i, 40) and rec.valid == (i % 5 != 4) and rec.empty == (i % 5 == 4)
        assert rec.info == {"i": i}
    info = store.info()
    assert info["records"] == 10 and info["valid"] == 8 and info["empty"] == 2 and info["shards"] == 3
    assert info["duplicates"] == 0 and info["failed"] == 0
    assert info["metadata"]["lfi_version"] and info["writers"] == {"r000": 10}
    with pytest.raises(KeyError, match="no record"):
        store["missing#000000000000"]
    assert store.verify(store.keys()).ok


def test_metadata_mismatch_names_field(tmp_path: Path) -> None:
    _write(tmp_path, 2)
    with pytest.raises(StoreMetadataError, match=r"field 'teacher': expected 'vit', found 'test'"):
        InteractionStore(tmp_path, expect={"teacher": "vit"})
    with pytest.raises(StoreMetadataError, match=r"field 'prompt': expected 'x', missing"):
        InteractionStore(tmp_path, expect={"prompt": "x"})
    with pytest.raises(StoreMetadataError, match="grid"):
        StoreWriter(tmp_path, {**META, "grid": [14, 14]})


def test_map_shape_must_match_grid(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, META)
    with pytest.raises(ValueError, match="store grid"):
        w.add(Record("a#0", torch.zeros(4, 4), (1, 1), False, True))


def test_leftover_tmp_is_ignored_reported_and_compacted(tmp_path: Path) -> None:
    _write(tmp_path, 3)
    tmp = tmp_path / SHARD_DIR / ".tmp-r000-dead.safetensors"
    tmp.write_bytes(b"partial")
    store = InteractionStore(tmp_path)
    assert len(store) == 3
    report = store.verify()
    assert report.ok and report.stale_tmp == [str(tmp)] and "lfi store compact" in report.summary()
    assert compact(tmp_path).removed_tmp == [str(tmp)] and not tmp.exists()
    assert len(InteractionStore(tmp_path)) == 3
    tmp.write_bytes(b"partial")
    StoreWriter(tmp_path, META)  # a writer that starts also removes what killed writers left
    assert not tmp.exists()


def _one_shard(root: Path) -> Path:
    return sorted((root / SHARD_DIR).glob("r*.safetensors"))[0]


def test_verify_finds_truncated_shard(tmp_path: Path) -> None:
    _write(tmp_path, 8)
    shard = _one_shard(tmp_path)
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(StoreCorruptError, match=shard.name):
        InteractionStore(tmp_path)
    report = InteractionStore(tmp_path, strict=False).verify()
    assert not report.ok and len(report.corrupt) == 1 and shard.name in report.corrupt[0]
    assert report.records == 4


def test_flipped_byte_is_caught_by_reader_and_verify(tmp_path: Path) -> None:
    _write(tmp_path, 8)
    shard = _one_shard(tmp_path)
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor bytes: the header still parses
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}: digest mismatch.*delete this shard"):
        InteractionStore(tmp_path)
    report = InteractionStore(tmp_path, strict=False).verify(expected_keys=[_record(i).key for i in range(9)])
    assert len(report.corrupt) == 1 and shard.name in report.corrupt[0] and "digest" in report.corrupt[0]
    assert (
        len(report.missing) == 5 and _record(8).key in report.missing
    )  # 4 in the bad shard, 1 never written
    assert "PROBLEMS" in report.summary()


def test_edited_key_is_caught_by_reader_and_verify(tmp_path: Path) -> None:
    _write(tmp_path, 4)
    shard = _one_shard(tmp_path)
    old = _record(1).key.encode()
    data = shard.read_bytes()
    assert data.count(old) == 1
    shard.write_bytes(data.replace(old, old.replace(b"img/1", b"img/7")))  # same length: still parses
    with pytest.raises(StoreCorruptError, match=rf"{shard.name}: digest mismatch"):
        InteractionStore(tmp_path)
    report = InteractionStore(tmp_path, strict=False).verify()
    assert not report.ok and shard.name in report.corrupt[0]


def test_truncated_store_json_names_the_file_and_compact_restores_it(tmp_path: Path) -> None:
    _write(tmp_path, 4)
    meta = tmp_path / "store.json"
    good = json.loads(meta.read_text())
    meta.write_text(meta.read_text()[:25])
    for read in (InteractionStore, summarize):
        with pytest.raises(StoreCorruptError, match=rf"{meta}: damaged, not valid JSON.*lfi store compact"):
            read(tmp_path)
    assert compact(tmp_path).metadata_restored
    assert json.loads(meta.read_text()) == good and len(InteractionStore(tmp_path)) == 4


def test_nan_map_is_refused_at_write(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, META)
    bad = _record(0)
    bad.map[1, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"{bad.key}: map has NaN or Inf"):
        w.add(bad)
    bad.map[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        w.add(bad)
    w.close()
    assert len(InteractionStore(tmp_path)) == 0


def test_interleaved_writers_never_duplicate(tmp_path: Path) -> None:
    """Two writers on one store with the same name (a job launched twice) and the same keys."""
    a = StoreWriter(tmp_path, META, shard_size=3)
    b = StoreWriter(tmp_path, META, shard_size=2)
    for i in range(10):
        a.add(_record(i))
        b.add(_record(9 - i))
    a.close()
    b.close()
    assert a.committed + b.committed == 10 and a.dropped + b.dropped == 10
    store = InteractionStore(tmp_path)
    assert len(store) == 10 and store.info()["duplicates"] == 0
    assert store.verify([_record(i).key for i in range(10)]).ok


def test_compact_removes_identical_duplicates(tmp_path: Path) -> None:
    _write(tmp_path, 6)
    meta = InteractionStore(tmp_path).metadata
    again = [_record(i, valid=i % 5 != 4) for i in (1, 2, 7)]
    _commit_shard(tmp_path, "r001-000000000000.safetensors", again, meta)  # as lfi before the lock did
    store = InteractionStore(tmp_path)
    assert len(store) == 7 and store.info()["duplicates"] == 2
    assert len(store.verify().duplicates) == 2 and not store.verify().ok
    before = store_arrays(store)
    report = compact(tmp_path)
    assert report.removed_duplicates == 2 and not report.differing
    after = InteractionStore(tmp_path)
    assert after.verify().ok and after.info()["duplicates"] == 0
    for name, value in store_arrays(after).items():
        np.testing.assert_array_equal(value, before[name])


def test_compact_keeps_differing_duplicates_unless_asked(tmp_path: Path) -> None:
    _write(tmp_path, 3)
    meta = InteractionStore(tmp_path).metadata
    other = _record(0)
    other.map = torch.full((3, 4), 1 / 12)
    # "m" holds key 5's first record and a copy of key 1; "n" a different record of key 5: rewriting "m"
    # without key 1 must not let "n" become key 5's first record.
    _commit_shard(tmp_path, "r001-m.safetensors", [_record(5), _record(1)], meta)
    _commit_shard(
        tmp_path, "r001-n.safetensors", [other, Record(_record(5).key, other.map, (1, 1), True, False)], meta
    )
    report = compact(tmp_path)
    assert report.removed_duplicates == 1 and sorted(report.differing) == sorted([other.key, _record(5).key])
    assert "--keep-first" in report.summary(tmp_path) and not InteractionStore(tmp_path).verify().ok
    torch.testing.assert_close(InteractionStore(tmp_path).map(_record(5).key), _record(5).map)
    assert compact(tmp_path, keep_first=True).removed_duplicates == 2
    store = InteractionStore(tmp_path)
    assert store.verify().ok and len(store) == 4
    torch.testing.assert_close(store.map(other.key), _record(0).map)  # the first records, as readers used
    torch.testing.assert_close(store.map(_record(5).key), _record(5).map)


def test_compact_of_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such store folder"):
        compact(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow
def test_two_writer_processes_on_overlapping_keys(tmp_path: Path) -> None:
    """Two processes, same writer name, keys 0..19 and 10..29 (a job launched twice): each key once."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_extract_store import _write
        _write(__import__("pathlib").Path(sys.argv[1]), 20, writer="r000", shard_size=1, start=int(sys.argv[2]))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(10 * r)]) for r in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    store = InteractionStore(tmp_path)
    assert len(store) == 30 and store.info()["duplicates"] == 0 and store.info()["writers"] == {"r000": 30}
    assert store.verify([_record(i).key for i in range(30)]).ok
    assert json.loads((tmp_path / "store.json").read_text())["teacher"] == "test"


class _Maps(Dataset):
    def __init__(self, store: InteractionStore) -> None:
        self.store, self.keys = store, sorted(store.keys())

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.store.map(self.keys[i])


def test_dataloader_workers_read_the_store(tmp_path: Path) -> None:
    _write(tmp_path, 12)
    store = InteractionStore(tmp_path)
    store.map(store.keys()[0])  # parent opened a memory map before forking: workers must not reuse it
    loaded = torch.cat(list(DataLoader(_Maps(store), batch_size=5, num_workers=2)))
    expected = torch.from_numpy(store_arrays(store)["maps"])
    torch.testing.assert_close(loaded, expected)


def test_store_info_reads_no_tensors(tmp_path: Path) -> None:
    """`lfi store info` answers from headers with the standard library: neither torch nor safetensors."""
    _write(tmp_path, 5)
    lfi_dir = Path(__import__("lfi").__file__).parent
    script = textwrap.dedent(
        f"""
        import sys, types
        pkg = types.ModuleType("lfi")  # the package itself, without its top-level (model) imports
        pkg.__path__ = [{str(lfi_dir)!r}]
        sys.modules["lfi"] = pkg
        from lfi.cli.extract import register
        from lfi.store.layout import summarize
        info = summarize(sys.argv[1])
        heavy = sorted(m for m in ("torch", "numpy", "safetensors", "timm") if m in sys.modules)
        print(info["records"], info["valid"], info["empty"], heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["5", "4", "1", "[]"]


def _edit_store_json(root: Path, **fields) -> None:
    meta = root / "store.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **fields}))


@pytest.mark.parametrize("edit", [{"teacher": "vit"}, {"grid": [4, 3]}, {"checkpoint": "other.safetensors"}])
def test_edited_store_json_is_refused_by_reader_and_verify(tmp_path: Path, edit: dict) -> None:
    """Drill (issue 32.2): store.json edited after extraction; every shard's copy disagrees with it."""
    _write(tmp_path, 8)
    (field,) = edit
    _edit_store_json(tmp_path, **edit)
    with pytest.raises(
        StoreMetadataError, match=rf"{_one_shard(tmp_path)}: its copy of store.json.*'{field}'"
    ):
        InteractionStore(tmp_path)
    report = InteractionStore(tmp_path, strict=False).verify()
    assert not report.ok and report.records == 0
    assert any(f"field {field!r}" in c and "store.json" in c for c in report.corrupt)


def test_edited_store_json_of_a_store_without_shards_is_refused(tmp_path: Path) -> None:
    StoreWriter(tmp_path, META).close()
    _edit_store_json(tmp_path, teacher="vit")
    with pytest.raises(StoreMetadataError, match=rf"{tmp_path / 'store.json'}: field 'store_id'"):
        InteractionStore(tmp_path)
    with pytest.raises(StoreMetadataError, match="field 'store_id'"):
        StoreWriter(tmp_path, {**META, "teacher": "vit"})
    assert "store_id" in InteractionStore(tmp_path, strict=False).verify().corrupt[0]


def test_shard_copied_from_another_store_is_refused(tmp_path: Path) -> None:
    """Drill (issue 32.2): a shard of another store written with the very same settings is copied in."""
    _write(tmp_path / "a", 4)
    _write(tmp_path / "b", 4, start=10)
    stranger = _one_shard(tmp_path / "b")
    copied = tmp_path / "a" / SHARD_DIR / stranger.name
    copied.write_bytes(stranger.read_bytes())
    with pytest.raises(StoreMetadataError, match=rf"{copied}: its copy of store.json.*'store_uid'"):
        InteractionStore(tmp_path / "a")
    report = InteractionStore(tmp_path / "a", strict=False).verify()
    assert not report.ok and report.records == 4 and str(copied) in report.corrupt[0]


def test_a_resumed_writer_keeps_the_store_identity(tmp_path: Path) -> None:
    _write(tmp_path, 4)
    first = json.loads((tmp_path / "store.json").read_text())
    assert {"store_uid", "store_id"} <= set(first)
    _write(tmp_path, 4, writer="r001", start=4)  # a second run (resume) appends with the same identity
    assert json.loads((tmp_path / "store.json").read_text()) == first
    assert len(InteractionStore(tmp_path)) == 8


def test_cli_store_verify_names_the_edited_field(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from lfi.cli import main

    _write(tmp_path, 4)
    _edit_store_json(tmp_path, teacher="vit")
    assert main(["store", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS" in out and "field 'teacher': store.json has 'vit', the shard's copy has 'test'" in out
