"""Image decoding is faithful for every mode or names the file; damaged archives name the file;
`build_dataset` dispatches by name."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from lfi.data.base import ImageDecodeError, decode_rgb
from lfi.data.build import build_dataset
from lfi.data.source import FileSource


def _encode(img: PIL.Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    img = PIL.Image.fromarray(values)
    assert img.mode == "I;16"
    out = decode_rgb(_encode(img), "grey16.png")
    expected = torch.from_numpy(np.round(values / 257).astype(np.uint8))
    assert out.shape == (3, 2, 4)
    for channel in out:
        torch.testing.assert_close(channel, expected, atol=0, rtol=0)


def test_8_bit_modes_convert_exactly() -> None:
    rgb = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    palette = PIL.Image.fromarray(rgb).quantize(colors=2)
    assert torch.equal(decode_rgb(_encode(palette), "p.png").permute(1, 2, 0), torch.from_numpy(rgb))
    la = PIL.Image.fromarray(np.array([[[7, 0], [200, 255]]], dtype=np.uint8), mode="LA")
    assert decode_rgb(_encode(la), "la.png")[:, 0].tolist() == [[7, 200]] * 3  # grey kept, alpha dropped
    cmyk = PIL.Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # pure red
    assert decode_rgb(_encode(cmyk, "JPEG"), "c.jpg")[:, 0, 0].tolist() == pytest.approx([255, 0, 0], abs=2)


def test_float_and_out_of_range_images_are_refused_with_the_file() -> None:
    with pytest.raises(ImageDecodeError, match=r"f\.tif: floating-point image"):
        decode_rgb(_encode(PIL.Image.new("F", (2, 2), 0.5), "TIFF"), "f.tif")
    wide = PIL.Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I")
    with pytest.raises(ImageDecodeError, match=r"i\.tif: I image with values in \[-5, 70000\]"):
        decode_rgb(_encode(wide, "TIFF"), "i.tif")


def test_decompression_bomb_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(PIL.Image.new("L", (100, 100)))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x limit: Pillow refuses
    with pytest.raises(ImageDecodeError, match=r"big\.png: refused as a possible decompression bomb") as e:
        decode_rgb(data, "big.png")
    assert e.value.path == "big.png"


def test_truncated_image_names_the_file() -> None:
    data = _encode(PIL.Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: cannot decode"):
        decode_rgb(data[: len(data) // 2], "cut.jpg")


def test_truncated_zip_names_the_file(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ds/a.txt", "hello" * 100)
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{archive}: not a readable zip archive.*re-copy"):
        FileSource([archive], prefix="ds/")


def test_damaged_zip_member_names_zip_and_member(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ds/a.txt", "hello" * 100)
    data = bytearray(archive.read_bytes())
    data[data.index(b"hello") + 3] ^= 0xFF  # payload byte: the CRC no longer matches
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{archive}: member 'ds/a.txt' is damaged"):
        FileSource([archive], prefix="ds/").read("a.txt")


def test_build_dataset_checks_names_domains_and_masks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; known: tinyimagenet, pacs"):
        build_dataset("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match="'tinyimagenet' has no domains"):
        build_dataset("tinyimagenet", tmp_path, "train", domains=["photo"])
    with pytest.raises(ValueError, match="'voc' has no instance masks"):
        build_dataset("voc", tmp_path, "train", masks=True)


def test_lfi_data_exports_are_lazy() -> None:
    import lfi.data

    assert lfi.data.build_dataset is build_dataset
    with pytest.raises(AttributeError, match="no attribute 'registry'"):
        lfi.data.registry  # noqa: B018 (the old module is gone)
