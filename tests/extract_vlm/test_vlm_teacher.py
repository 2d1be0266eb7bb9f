"""LlavaTeacher end to end on the tiny model: batching, Eq. 12 entries, generate mode, metadata, loading."""

from __future__ import annotations

import json

import pytest
import torch

from lfi.extract.teacher import apply_contrast, build_teacher
from lfi.extract.vlm import LlavaTeacher, default_layers


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_default_layer_is_14_of_32() -> None:
    assert default_layers(32) == (14,) and default_layers(40) == (17,)


def test_batch_equals_one_by_one(tiny_llava) -> None:
    model, processor = tiny_llava
    teacher = LlavaTeacher(model, processor, layers=(1, 2))
    batch = [
        {"image": _image(0, 40, 60), "class_name": "cat"},
        {"image": _image(1, 56, 30), "class_name": "golden retriever"},  # longer answer: padding
        {"image": _image(2, 33, 33), "class_name": "red fox"},
    ]
    together = teacher(batch)
    assert together.fore.shape == together.back.shape == (3, 4, 4)
    for i, sample in enumerate(batch):
        alone = teacher([sample])
        torch.testing.assert_close(together.fore[i], alone.fore[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.back[i], alone.back[0], rtol=1e-4, atol=1e-6)
    assert torch.allclose(together.fore.sum((1, 2)), torch.ones(3))
    assert torch.allclose(together.back.sum((1, 2)), torch.ones(3))
    contrasted = apply_contrast(together.fore, together.back, "skip", ["a", "b", "c"])
    assert torch.isfinite(contrasted.maps).all()
    assert (
        together.info[1]["answer"]
        == "{foreground: [golden retriever], background: [sky, ground, wall, grass, water]}"
    )


def test_dense_sums_one_map_per_instance_and_handles_no_boxes(tiny_llava) -> None:
    model, processor = tiny_llava
    teacher = LlavaTeacher(model, processor, task="dense", layers=(1,))
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 10.0, 55.0, 35.0], [5.0, 20.0, 15.0, 38.0]])
    out = teacher(
        [
            {
                "image": _image(3, 40, 60),
                "class_name": "dog",
                "boxes": boxes,
                "box_names": ["dog", "person", "dog"],
            },
            {"image": _image(4, 40, 60), "class_name": "dog", "boxes": torch.zeros(0, 4)},
        ]
    )
    assert out.info[0]["answer"].startswith("{objects: [dog, person, dog], background: [")
    assert out.info[0]["prompt"] == "Locate all dog and person instances"
    assert torch.isclose(out.fore[0].sum(), torch.tensor(3.0))  # Eq. 12: sum over K = 3 normalised maps
    assert out.fore[1].abs().sum() == 0 and out.back[1].abs().sum() == 0 and out.info[1] == {"instances": 0}


def test_generated_background_mode_runs(tiny_llava) -> None:
    model, processor = tiny_llava
    teacher = LlavaTeacher(model, processor, layers=(1,), background_mode="generate", max_new_tokens=6)
    out = teacher(
        [{"image": _image(5, 40, 60), "class_name": "cat"}, {"image": _image(6, 30, 50), "class_name": "dog"}]
    )
    assert out.fore.shape == (2, 4, 4) and torch.isfinite(out.fore).all() and torch.isfinite(out.back).all()
    for info in out.info:
        assert info["background_source"] in ("generated", "fixed: none generated")
        assert info["answer"].startswith("{foreground: [")


def test_metadata_is_json_and_bad_input_is_named(tiny_llava) -> None:
    model, processor = tiny_llava
    teacher = LlavaTeacher(model, processor, layers=(2,), heads=(0, 3))
    meta = json.loads(json.dumps(teacher.metadata()))
    assert (
        meta["teacher"] == "llava"
        and meta["grid"] == [4, 4]
        and meta["layers"] == [2]
        and meta["heads"] == [0, 3]
    )
    with pytest.raises(ValueError, match="class_name"):
        teacher([{"image": _image(0, 20, 20)}])
    with pytest.raises(ValueError, match=r"batch\[0\]\['image'\]"):
        teacher([{"image": torch.zeros(3, 20, 20), "class_name": "cat"}])
    with pytest.raises(ValueError, match="background_mode"):
        LlavaTeacher(model, processor, background_mode="ask")  # type: ignore[arg-type]


def test_save_and_reload_offline_through_the_registry(tiny_llava, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = tiny_llava
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    teacher = build_teacher("llava", checkpoint=str(tmp_path), layers=(1,), device="cpu")
    sample = {"image": _image(7, 40, 60), "class_name": "cat"}
    reference = LlavaTeacher(model, processor, layers=(1,))([sample])
    torch.testing.assert_close(teacher([sample]).fore, reference.fore)
    assert teacher.metadata()["checkpoint"] == str(tmp_path)
