"""Prompts, answer spans, token spans through the tokenizer's offsets, and image-token slicing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lfi.extract.vlm.prompts import (
    answer_prefix,
    check_word,
    conversation,
    format_answer,
    parse_background,
    task_prompt,
)
from lfi.extract.vlm.tokens import (
    check_image_offsets,
    expanded_text,
    image_positions,
    locate,
    token_rows,
)


def test_answer_spans_cover_their_words() -> None:
    answer = format_answer("dense", ["dog", "golden retriever"], ["sky", "grass"])
    assert answer.text == "{objects: [dog, golden retriever], background: [sky, grass]}"
    assert [answer.text[s:e] for s, e in answer.fore] == ["dog", "golden retriever"]
    assert [answer.text[s:e] for s, e in answer.back] == ["sky", "grass"]
    prefix, fore = answer_prefix("classification", ["cat"])
    assert prefix == "{foreground: [cat], background: ["
    assert format_answer("classification", ["cat"], ["sky"]).text.startswith(prefix)
    assert [prefix[s:e] for s, e in fore] == ["cat"]


def test_prompts() -> None:
    assert task_prompt("classification", ["cat"]) == "Classify foreground vs. background"
    assert task_prompt("dense", ["dog", "person", "dog"]) == "Locate all dog and person instances"
    with pytest.raises(ValueError, match="task"):
        task_prompt("segment", ["dog"])  # type: ignore[arg-type]


def test_bad_words_are_rejected() -> None:
    with pytest.raises(ValueError, match="class_name"):
        check_word("cat, kitty", "class_name")
    with pytest.raises(ValueError, match="back_words"):
        format_answer("classification", ["cat"], [])


def test_parse_background() -> None:
    assert parse_background(" tree, 'sky' ,, road]} more", 5) == ["tree", "sky", "road"]
    assert parse_background("a, b, c, d]", 2) == ["a", "b"]
    assert parse_background("tree, sky, roa", 5) == ["tree", "sky"]  # unclosed: last entry is cut off
    assert parse_background("]", 5) == []


def _encode(processor, class_name: str):
    answer = format_answer("classification", [class_name], ["sky", "ground", "wall"])
    text = processor.apply_chat_template(
        conversation("Classify foreground vs. background", answer.text), tokenize=False
    )
    enc = processor(
        text=[text], images=[Image.new("RGB", (56, 56))], return_offsets_mapping=True, return_tensors="pt"
    )
    return answer, text, enc


def test_token_spans_map_to_the_right_words(tiny_llava) -> None:
    model, processor = tiny_llava
    answer, text, enc = _encode(processor, "golden retriever")
    columns = image_positions(enc["input_ids"], model.config.image_token_id, 16)
    full = expanded_text(text, processor.image_token, 16)
    offsets = enc["offset_mapping"][0]
    check_image_offsets(full, offsets, columns[0], processor.image_token)
    at = locate(full, answer.text)
    tok = processor.tokenizer
    fore = token_rows(offsets, (at + answer.fore[0][0], at + answer.fore[0][1]))
    assert tok.decode(enc["input_ids"][0, fore]).replace(" ", "") == "goldenretriever"
    for (s, e), word in zip(answer.back, ["sky", "ground", "wall"], strict=True):
        rows = token_rows(offsets, (at + s, at + e))
        assert tok.decode(enc["input_ids"][0, rows]).replace(" ", "") == word
        assert min(rows) > max(fore) > int(columns[0].max())  # the answer comes after the image


def test_image_token_slicing(tiny_llava) -> None:
    model, processor = tiny_llava
    _, _, enc = _encode(processor, "cat")
    ids = enc["input_ids"]
    columns = image_positions(ids, model.config.image_token_id, 16)
    assert columns.shape == (1, 16)
    assert (ids[0, columns[0]] == model.config.image_token_id).all()
    assert torch.equal(columns[0], torch.arange(16) + int(columns[0, 0]))  # one contiguous run
    with pytest.raises(ValueError, match="image tokens"):
        image_positions(ids, model.config.image_token_id, 15)


def test_wrong_expansion_is_caught(tiny_llava) -> None:
    _, processor = tiny_llava
    _, text, enc = _encode(processor, "cat")
    columns = image_positions(enc["input_ids"], processor.image_token_id, 16)
    wrong = expanded_text(text, processor.image_token, 15)
    with pytest.raises(ValueError, match="expands the image placeholder"):
        check_image_offsets(wrong, enc["offset_mapping"][0], columns[0], processor.image_token)
