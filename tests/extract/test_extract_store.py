"""Interaction store: keys, round trip, metadata checks, concurrent writers, verify, DataLoader reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lfi.extract.store import (
    SHARD_DIR,
    InteractionStore,
    Record,
    StoreCorruptError,
    StoreMetadataError,
    StoreWriter,
    image_key,
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


def test_leftover_tmp_is_ignored_and_reported(tmp_path: Path) -> None:
    _write(tmp_path, 3)
    (tmp_path / SHARD_DIR / ".tmp-r000-dead.safetensors").write_bytes(b"partial")
    store = InteractionStore(tmp_path)
    assert len(store) == 3
    report = store.verify()
    assert report.ok and len(report.stale_tmp) == 1


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


def test_verify_finds_flipped_byte_and_missing_keys(tmp_path: Path) -> None:
    _write(tmp_path, 8)
    shard = _one_shard(tmp_path)
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor bytes: the header still parses
    shard.write_bytes(bytes(data))
    report = InteractionStore(tmp_path, strict=False).verify(expected_keys=[_record(i).key for i in range(9)])
    assert any("checksum" in c for c in report.corrupt)
    assert report.missing == [_record(8).key]
    assert "PROBLEMS" in report.summary()


@pytest.mark.slow
def test_two_writer_processes_at_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_extract_store import _write
        _write(__import__("pathlib").Path(sys.argv[1]), 20, writer=sys.argv[2], shard_size=3,
               start=int(sys.argv[3]))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"r00{r}", str(20 * r)])
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = InteractionStore(tmp_path)
    assert len(store) == 40 and store.info()["writers"] == {"r000": 20, "r001": 20}
    assert store.verify([_record(i).key for i in range(40)]).ok
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
