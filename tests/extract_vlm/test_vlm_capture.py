"""The "lfi_capture" attention: captured rows equal the same rows of a full eager attention computation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lfi.extract.vlm.capture import AttentionCapture, layers_up_to
from lfi.extract.vlm.tokens import image_positions, pad_rows


def _batch(processor, padding_side: str):
    texts = [
        "USER: <image>\nClassify foreground vs. background ASSISTANT: {foreground: [cat], background: [sky]} ",
        "USER: <image>\nLocate all dog instances ASSISTANT: {objects: [golden retriever, dog], background: [sky]} ",
    ]
    images = [Image.new("RGB", (56, 56), (200, 30, 30)), Image.new("RGB", (56, 56), (20, 90, 200))]
    return processor(text=texts, images=images, padding=True, padding_side=padding_side, return_tensors="pt")


def _reference(eager, enc, layer: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = eager(**enc, output_attentions=True)
    full = out.attentions[layer]  # (B, H, T, T)
    b, h = full.shape[:2]
    picked = full.gather(2, rows[:, None, :, None].expand(b, h, -1, full.shape[-1]))
    return picked.gather(3, cols[:, None, None, :].expand(b, h, rows.shape[1], -1))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_captured_rows_equal_eager_attention(tiny_llava, eager_twin, padding_side: str) -> None:
    model, processor = tiny_llava
    enc = _batch(processor, padding_side)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    cols = image_positions(ids, model.config.image_token_id, 16)
    # The last real token of each sequence: before the pads on the right, at the end on the left.
    last = mask.sum(1) - 1 if padding_side == "right" else torch.full((2,), ids.shape[1] - 1)
    rows = pad_rows(
        [[int(c[0]), int(c[-1]) + 1, int(n) - 2, int(n)] for c, n in zip(cols, last, strict=True)]
    )
    capture = AttentionCapture(model, layers=(0, 2))
    with torch.no_grad(), capture.capturing(rows, cols) as got:
        model(**enc)  # with the padding mask: exercises the boolean-mask branch
    for layer in (0, 2):
        assert got[layer].shape == (2, 4, 4, 16)
        torch.testing.assert_close(
            got[layer], _reference(eager_twin, enc, layer, rows, cols), rtol=1e-5, atol=1e-6
        )
    assert 1 not in got  # uncaptured layers keep nothing


def test_head_subset_and_plain_causal_path(tiny_llava, eager_twin) -> None:
    model, processor = tiny_llava
    enc = _batch(processor, "right")
    enc["attention_mask"] = torch.ones_like(enc["attention_mask"])  # no padding -> SDPA gets no mask at all
    cols = image_positions(enc["input_ids"], model.config.image_token_id, 16)
    rows = pad_rows([[20, 25, 30], [21, 26, 33]])
    capture = AttentionCapture(model, layers=(1,), heads=(1, 2))  # heads 1, 2 use KV heads 0, 1 (GQA)
    with torch.no_grad(), capture.capturing(rows, cols) as got:
        model(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"])
    ref = _reference(eager_twin, enc, 1, rows, cols)[:, [1, 2]]
    torch.testing.assert_close(got[1], ref, rtol=1e-5, atol=1e-6)


def test_cutting_later_layers_changes_nothing(tiny_llava) -> None:
    model, processor = tiny_llava
    enc = _batch(processor, "right")
    cols = image_positions(enc["input_ids"], model.config.image_token_id, 16)
    rows = pad_rows([[20, 30], [21, 33]])
    capture = AttentionCapture(model, layers=(1,))
    with torch.no_grad(), capture.capturing(rows, cols) as full:
        model.model(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"], use_cache=False)
    with torch.no_grad(), capture.capturing(rows, cols) as cut, layers_up_to(model, 1):
        model.model(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"], use_cache=False)
    torch.testing.assert_close(cut[1], full[1], rtol=0, atol=0)
    assert len(model.model.language_model.layers) == 3  # restored


def test_capture_needs_the_capture_attention(tiny_llava, eager_twin) -> None:
    with pytest.raises(ValueError, match="lfi_capture"):
        AttentionCapture(eager_twin, layers=(0,))
    with pytest.raises(ValueError, match="layers"):
        AttentionCapture(tiny_llava[0], layers=(3,))
    with pytest.raises(ValueError, match="heads"):
        AttentionCapture(tiny_llava[0], layers=(0,), heads=(4,))
