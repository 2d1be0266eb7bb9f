"""ViT relevance teacher (VFM->VFM substitute) on the real shared DeiT-Tiny."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lfi.extract.oracle import OracleTeacher
from lfi.extract.teacher import apply_contrast
from lfi.extract.vit_teacher import (
    WEIGHTS_FILE,
    WEIGHTS_FILE_BF16,
    ViTRelevanceTeacher,
    default_weights,
    shared_weights_dir,
)

skimage_data = pytest.importorskip("skimage.data")
pytestmark = pytest.mark.data  # the weights live in the shared data folder


@pytest.fixture(scope="module")
def teacher() -> ViTRelevanceTeacher:
    if not (shared_weights_dir() / WEIGHTS_FILE).is_file():
        pytest.skip(f"shared DeiT-Tiny weights not found in {shared_weights_dir()} (set LFI_DATA)")
    return ViTRelevanceTeacher()


def _chelsea() -> torch.Tensor:
    return torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).contiguous()  # (3, 300, 451)


def _mass_in(box: list[float], image: torch.Tensor, maps: torch.Tensor) -> float:
    region = OracleTeacher(grid=tuple(maps.shape[-2:])).fore_map(
        {"image": image, "boxes": torch.tensor([box])}
    )
    return float((region * maps).sum())


def test_metadata_names_it_a_substitute(teacher: ViTRelevanceTeacher) -> None:
    meta = teacher.metadata()
    assert (
        meta["teacher"] == "vit"
        and "VFM->VFM substitute" in meta["kind"]
        and "not the paper's VLM" in meta["kind"]
    )
    assert meta["grid"] == [14, 14] and meta["revision"].startswith("sha256:")


def test_cat_relevance_falls_on_the_cat_face(teacher: ViTRelevanceTeacher) -> None:
    image = _chelsea()
    out = teacher([{"image": image, "class_name": "tabby"}])
    assert out.info == [{"target": 281, "target_from": "label"}]  # 281 = tabby in ImageNet-1k order
    maps = apply_contrast(out.fore, out.back, "error", ["chelsea"]).maps[0]
    assert maps.sum().item() == pytest.approx(1.0, abs=1e-5)
    face = [120.0, 90.0, 380.0, 280.0]  # eyes, nose and mouth; 36.5% of the image area
    inside = _mass_in(face, image, maps)
    area = (260 * 190) / (451 * 300)
    # relevance density on the face at least 1.5x the density elsewhere (measured: 2.2x)
    assert inside / area > 1.5 * (1 - inside) / (1 - area)


@pytest.mark.slow
def test_batch_equals_one_by_one_and_top1_fallback(teacher: ViTRelevanceTeacher) -> None:
    cat = _chelsea()
    coffee = torch.from_numpy(skimage_data.coffee()).permute(2, 0, 1).contiguous()
    batch = [{"image": cat, "class_name": "no such class"}, {"image": coffee, "class_name": "espresso"}]
    together = teacher(batch)
    alone = [teacher([s]) for s in batch]
    for i, one in enumerate(alone):
        torch.testing.assert_close(together.fore[i], one.fore[0], rtol=1e-4, atol=1e-6)
        assert together.info[i] == one.info[0]
    assert together.info[0]["target_from"] == "top1" and together.info[1]["target_from"] == "label"


@pytest.mark.slow
def test_others_background_is_a_distribution(teacher: ViTRelevanceTeacher) -> None:
    others = ViTRelevanceTeacher(back="others", top_k=3)
    out = others([{"image": _chelsea(), "class_name": "tabby"}])
    assert out.back.sum().item() == pytest.approx(1.0, abs=1e-5) and (out.back >= 0).all()
    assert not torch.allclose(out.back, torch.full_like(out.back, 1 / 196))
    assert others.metadata()["back"] == "others(top_k=3)"


def test_tinyimagenet_val_image(teacher: ViTRelevanceTeacher, shared_data: Path) -> None:
    from lfi.data.tinyimagenet import TinyImageNet

    ds = TinyImageNet(shared_data, split="val")
    sample = ds[0]  # val_0.JPEG, n03444034 (go-kart), box (0, 32, 44, 62): 34% of the image
    wnid = ds.wnids[sample["label"]]
    out = teacher([{**sample, "wnid": wnid}])
    assert out.info[0] == {"target": teacher.wnid_to_index[wnid], "target_from": "label"}
    # the words.txt class name alone finds the same ImageNet class
    assert teacher.target_index({"class_name": sample["class_name"]}) == teacher.wnid_to_index[wnid]
    maps = apply_contrast(out.fore, out.back, "error", [sample["key"]]).maps[0]
    box = sample["boxes"][0].tolist()
    assert _mass_in(box, sample["image"], maps) > 0.6  # measured 0.79


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights"):
        ViTRelevanceTeacher(weights=tmp_path / "none.safetensors")


def test_default_weights_take_the_bf16_copy_only_when_the_fp32_file_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("LFI_DATA", str(tmp_path))
    assert default_weights() == weights / WEIGHTS_FILE  # neither: the fp32 path, which the error names
    (weights / WEIGHTS_FILE_BF16).write_bytes(b"")
    assert default_weights() == weights / WEIGHTS_FILE_BF16
    (weights / WEIGHTS_FILE).write_bytes(b"")
    assert default_weights() == weights / WEIGHTS_FILE
