"""Drills (issue 32.3): the decoded-image cache is checked against its sources and itself at every open, and
a stale or damaged one is rebuilt with a warning naming the file, never used silently."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lfi.data.cache import CacheInvalid, ImageCache
from lfi.data.imagefolder import ImageFolder
from lfi.demo.synthetic import ShortcutShapes
from tests.data.test_imagefolder import make_folder, png


def _pixels(cache: ImageCache, i: int) -> torch.Tensor:
    return torch.from_numpy(np.array(cache.images[i]))


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[ShortcutShapes, ImageCache]:
    data = ShortcutShapes("train", 12, size=16)
    return data, ImageCache.build(data, 16, tmp_path, progress=False)


def _same_cache(cache: ImageCache, data: ShortcutShapes) -> bool:
    return all(
        torch.equal(_pixels(cache, i), data[i]["image"].as_subclass(torch.Tensor)) for i in range(len(data))
    )


def test_a_replaced_image_of_a_folder_dataset_makes_the_cache_stale(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", {"cat": 3, "dog": 2})
    data = ImageFolder(root)
    first = ImageCache.build(data, 8, tmp_path / "cache", progress=False)
    image = root / "cat" / "001.png"
    image.write_bytes(png((20, 14), seed=99))  # same name, other pixels
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))  # a later write
    with pytest.warns(UserWarning, match=rf"{first.path}: stale image cache: {image} changed.*rebuilding"):
        again = ImageCache.build(data, 8, tmp_path / "cache", progress=False)
    assert again.path == first.path  # the same images by name: the same cache file, rebuilt
    fresh = ImageCache.build(ImageFolder(root), 8, tmp_path / "other", progress=False)
    assert torch.equal(_pixels(again, 1), _pixels(fresh, 1)) and not torch.equal(
        _pixels(first, 1), _pixels(fresh, 1)
    )


def test_a_changed_byte_is_rebuilt(tmp_path: Path, shapes) -> None:
    data, cache = shapes
    raw = bytearray(cache.path.read_bytes())
    raw[-5] ^= 0xFF
    cache.path.write_bytes(bytes(raw))
    os.utime(cache.path, ns=(0, os.stat(cache.path).st_mtime_ns + 10**9))  # a write after the build
    with pytest.warns(UserWarning, match=rf"{cache.path}: damaged or modified image cache.*rebuilding"):
        again = ImageCache.build(data, 16, tmp_path, progress=False)
    assert _same_cache(again, data)


def test_a_changed_byte_with_its_mtime_kept_is_caught_by_the_full_check(tmp_path: Path, shapes) -> None:
    """Bit rot keeps size and mtime: only the SHA-256 (`lfi prepare`, verify='full') sees it."""
    data, cache = shapes
    stat = os.stat(cache.path)
    raw = bytearray(cache.path.read_bytes())
    raw[-5] ^= 0xFF
    cache.path.write_bytes(bytes(raw))
    os.utime(cache.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.warns(
        UserWarning, match=rf"{cache.path}: damaged image cache: its SHA-256 differs.*rebuilding"
    ):
        again = ImageCache.build(data, 16, tmp_path, progress=False, verify="full")
    assert _same_cache(again, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sound now: opened without a warning
        ImageCache.build(data, 16, tmp_path, progress=False, verify="full")


@pytest.mark.parametrize("damage", ["truncated", "other_size", "manifest", "missing_npy"])
def test_a_damaged_cache_is_rebuilt_naming_the_file(tmp_path: Path, shapes, damage: str) -> None:
    data, cache = shapes
    if damage == "truncated":
        cache.path.write_bytes(cache.path.read_bytes()[:-100])
    elif damage == "other_size":  # the cache of another side copied over this one
        shutil.copy(ImageCache.build(data, 8, tmp_path, progress=False).path, cache.path)
    elif damage == "manifest":
        cache.path.with_suffix(".json").write_text('{"version": 2, "side"')
    else:
        cache.path.unlink()
    named = cache.path.with_suffix(".json") if damage == "manifest" else cache.path
    with pytest.warns(UserWarning, match=rf"{named}: .*rebuilding it"):
        again = ImageCache.build(data, 16, tmp_path, progress=False)
    assert _same_cache(again, data)


def test_open_refuses_a_truncated_cache_naming_it(shapes) -> None:
    """Where nothing can rebuild it (a bare `open`), the error names the file, never numpy's bare message."""
    _, cache = shapes
    manifest = json.loads(cache.path.with_suffix(".json").read_text())
    cache.path.write_bytes(cache.path.read_bytes()[:-100])
    manifest["array"]["stat"] = [cache.path.stat().st_size, cache.path.stat().st_mtime_ns]  # stats agree
    cache.path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(CacheInvalid, match=rf"{cache.path}: unreadable image cache"):
        ImageCache.open(cache.path)


def test_concurrent_builds_decode_once_and_both_open(tmp_path: Path, monkeypatch) -> None:
    """Two DDP ranks asking for one cache at once: one decodes under the lock, the other opens its result."""
    import threading

    import lfi.data.cache as cache_module

    decode, calls = cache_module._decode, []
    monkeypatch.setattr(cache_module, "_decode", lambda *a: (calls.append(1), decode(*a)))
    data, results = ShortcutShapes("train", 12, size=16), []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads = [
            threading.Thread(
                target=lambda: results.append(ImageCache.build(data, 16, tmp_path, progress=False))
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 2 and len(calls) == 1 and all(_same_cache(r, data) for r in results)
