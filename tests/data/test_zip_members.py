"""Drill (issue 32.7): zip members that point outside the archive ('../', absolute paths) are left out with a
warning naming the archive and the member, never skipped silently as hidden files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from lfi.data.imagefolder import ImageFolder
from lfi.data.source import FileSource
from tests.data.test_imagefolder import LAYOUT, make_folder, png, zip_folder

ESCAPING = ["../evil.png", "dog/../../evil.png", "/etc/evil.png", "C:/evil.png", "..\\evil.png"]


def _with_escaping_members(tmp_path: Path) -> Path:
    archive = zip_folder(make_folder(tmp_path / "photos", LAYOUT), tmp_path / "photos.zip")
    with zipfile.ZipFile(archive, "a") as z:
        for name in ESCAPING:
            z.writestr(zipfile.ZipInfo(name), png())  # ZipInfo keeps the name as given
    return archive


def test_an_image_folder_zip_warns_of_each_escaping_member(tmp_path: Path) -> None:
    archive = _with_escaping_members(tmp_path)
    with pytest.warns(UserWarning) as caught:
        ds = ImageFolder(archive)
    messages = [str(w.message) for w in caught]
    for name in ESCAPING:
        assert any(
            m.startswith(f"{archive}: member {name!r} points outside the archive") for m in messages
        ), name
    assert len(ds) == 5 and all(".." not in s["relpath"] for s in ds)


def test_a_file_source_warns_and_never_indexes_them(tmp_path: Path) -> None:
    archive = _with_escaping_members(tmp_path)
    with pytest.warns(UserWarning) as caught:
        source = FileSource([archive])
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(ESCAPING) and all(
        any(f"member {n!r}" in m for m in messages) for n in ESCAPING
    )
    assert not any(".." in rel or rel.startswith("/") or ":" in rel for rel in source.files())
    assert not source.exists("../evil.png")
