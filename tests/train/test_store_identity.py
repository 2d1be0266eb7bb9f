"""Drill (issue 32.2): a run refuses a store whose store.json was edited or that holds another store's shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lfi.store.shards import StoreMetadataError
from lfi.train.build import build
from tests.train.conftest import tiny_config, tiny_data, write_store


def test_train_refuses_a_store_whose_store_json_was_edited(tmp_path: Path) -> None:
    """store.json edited from teacher 'oracle' to 'vit': a run asking for 'vit' must not read it."""
    data = tiny_data()
    store = write_store(data, tmp_path / "store").root
    meta = store / "store.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "teacher": "vit"}))
    cfg = tiny_config(tmp_path, teacher={"name": "vit"})
    with pytest.raises(
        StoreMetadataError, match=r"shards/.*safetensors: its copy of store.json.*field 'teacher'"
    ):
        build(cfg, data)


def test_train_refuses_a_shard_of_another_store(tmp_path: Path) -> None:
    data = tiny_data()
    write_store(data, tmp_path / "store")
    other = write_store(tiny_data(16), tmp_path / "other").root
    stranger = next((other / "shards").glob("*.safetensors"))
    shutil.copy(stranger, tmp_path / "store" / "shards" / f"z-{stranger.name}")
    with pytest.raises(StoreMetadataError, match=rf"z-{stranger.name}: its copy of store.json.*'store_uid'"):
        build(tiny_config(tmp_path), data)
