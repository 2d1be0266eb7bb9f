"""Every family on its tiny model: eager reference, geometry proven against the model, store via the CLI.

Geometry ground truth comes from the model itself, not from the family code: the tiny towers' image features
are local (conftest), so the image tokens whose input embeddings change when a small region of the original
image changes are exactly the tokens that see that region (plus the resampling filter's reach of a few
pixels). Each such token's placed footprint must meet the region, and tokens that did not change must not
cover it; a one-off in tiles, unpadding, merges or newline tokens breaks one of the two.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from lfi.extract.vlm import VLMTeacher, family_for, register_capture_attention
from lfi.extract.vlm.capture import AttentionCapture, language_model
from lfi.extract.vlm.tokens import image_columns, pad_rows, token_rows

SIZES = [(120, 200), (300, 90), (60, 500)]  # (H, W): wide, tall, very wide (LLaVA-NeXT: 3 tiles)
# Probe regions (y0, x0, y1, x1) as fractions of the image: corners, off-centre, edges.
PROBES = [(0.02, 0.03, 0.08, 0.09), (0.6, 0.7, 0.66, 0.76), (0.9, 0.05, 0.96, 0.1), (0.3, 0.9, 0.36, 0.97)]
REACH = 3  # pixels of the original image a resize filter may carry a change beyond its region


def _noise(seed: int, h: int, w: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy())


def _image_embeds(model: nn.Module, teacher: VLMTeacher, images: list[Image.Image]) -> torch.Tensor:
    """Input embeddings of the image tokens the language model receives: (B, N_max, D) and counts."""
    texts = [teacher.family.render(teacher.processor, "Classify foreground vs. background", None)] * len(
        images
    )
    enc = teacher.processor(
        text=texts, images=teacher.family.batch_images(images), padding=True, return_tensors="pt"
    )
    seen = {}

    def grab(_module, _args, kwargs):  # noqa: ANN001, ANN202
        seen["embeds"] = kwargs["inputs_embeds"]

    handle = language_model(model).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model.model(**teacher._device_inputs(enc), use_cache=False)
    finally:
        handle.remove()
    cols, counts = image_columns(enc["input_ids"], model.config.image_token_id)
    return seen["embeds"].gather(1, cols[..., None].expand(-1, -1, seen["embeds"].shape[-1])), counts


def _box(hw: tuple[int, int], probe: tuple[float, ...]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) pixels of a probe given as fractions of an (H, W) image."""
    return round(probe[0] * hw[0]), round(probe[1] * hw[1]), round(probe[2] * hw[0]), round(probe[3] * hw[1])


def _changed_tokens(model, teacher, hw, probes) -> tuple[list[set[int]], int]:  # noqa: ANN001
    """Per probe (fractions), the indices of the image tokens whose embedding changes when it is repainted."""
    base = _noise(0, *hw)
    images = [base]
    for probe in probes:
        y0, x0, y1, x1 = _box(hw, probe)
        patched = base.copy()
        patched.paste(_noise(1, y1 - y0, x1 - x0), (x0, y0))
        images.append(patched)
    embeds, counts = _image_embeds(model, teacher, images)  # one processor call and forward for all probes
    assert len(set(counts)) == 1
    diffs = (embeds[1:] - embeds[:1]).abs().amax(-1)[:, : counts[0]]
    return [set(torch.nonzero(d > 1e-5).flatten().tolist()) for d in diffs], counts[0]


# Idefics3's and SmolVLM's real image processors upsample every image to 1456 / 2048 px (~1.5 s an image on
# 2 cores): marked slow.
@pytest.mark.parametrize(
    "family",
    [
        "llava_next",
        "qwen2_vl",
        "qwen2_5_vl",
        "paligemma",
        "gemma3",
        pytest.param("idefics3", marks=pytest.mark.slow),
        pytest.param("smolvlm", marks=pytest.mark.slow),
    ],
)
def test_each_token_lands_on_the_region_it_sees(build_family, family: str) -> None:
    model, processor = build_family(family)(register_capture_attention())
    teacher = VLMTeacher(model, processor, layers=(1,))
    for hw in SIZES:
        image = _noise(0, *hw)
        texts = [teacher.family.render(processor, "Classify", None)]
        enc = processor(text=texts, images=[image], return_tensors="pt")
        layout = teacher.family.layout(model.config, processor, enc, 0, hw)
        # One map per token on the original image's pixel grid: where the family puts that token's mass.
        footprints = teacher.family.to_grid(torch.eye(layout.n_tokens), layout, hw, hw) > 0  # (N, H, W)
        changed, n = _changed_tokens(model, teacher, hw, PROBES)
        assert n == layout.n_tokens
        for probe, seen in zip(PROBES, changed, strict=True):
            assert seen, (hw, probe)
            y0, x0, y1, x1 = _box(hw, probe)
            near = footprints[:, max(0, y0 - REACH) : y1 + REACH, max(0, x0 - REACH) : x1 + REACH]
            inner = footprints[:, y0 + REACH : y1 - REACH, x0 + REACH : x1 - REACH]
            hits = near.flatten(1).any(1)
            covers = inner.flatten(1).any(1)
            assert all(hits[t] for t in seen), (hw, probe, sorted(t for t in seen if not hits[t]))
            unseen_covering = [t for t in torch.nonzero(covers).flatten().tolist() if t not in seen]
            assert not unseen_covering, (hw, probe, unseen_covering)


def test_planted_attention_lands_on_the_region(family_pair, monkeypatch) -> None:
    """End to end through the teacher: attention planted (in the capture) on the tokens that see a region."""
    model, processor, _ = family_pair
    teacher = VLMTeacher(model, processor, layers=(1,), grid=(20, 20))
    hw, probe = (240, 400), (0.55, 0.6, 0.8, 0.9)  # Qwen2-VL: 9 x 14 merged tokens
    (seen,), _ = _changed_tokens(model, teacher, hw, [probe])
    original = AttentionCapture.record

    def planted(self, module, query, key, attention_mask, scaling) -> None:  # noqa: ANN001
        original(self, module, query, key, attention_mask, scaling)
        out = self.request.out[module.layer_idx]
        plant = torch.zeros_like(out)
        plant[..., sorted(seen)] = 1.0 / len(seen)  # columns are the sequence's image tokens in order
        self.request.out[module.layer_idx] = plant

    monkeypatch.setattr(AttentionCapture, "record", planted)
    out = teacher(
        [{"image": _noise(0, *hw), "class_name": "cat"}, {"image": _noise(2, 60, 500), "class_name": "dog"}]
    )
    fore = out.fore[0]
    assert torch.isclose(fore.sum(), torch.tensor(1.0))
    # Mass only where the region lies, grown by the largest token footprint (e.g. a global-image token).
    text = teacher.family.render(processor, "Classify", None)
    images = teacher.family.batch_images([_noise(0, *hw)])
    layout = teacher.family.layout(model.config, processor, processor(text=[text], images=images), 0, hw)
    grow_y, grow_x = (
        max(float(getattr(p, e).diff().max()) for p in layout.parts) for e in ("y_edges", "x_edges")
    )
    rows, cols = torch.linspace(0, 1, 21), torch.linspace(0, 1, 21)
    inside_y = (rows[1:] > probe[0] - grow_y) & (rows[:-1] < probe[2] + grow_y)
    inside_x = (cols[1:] > probe[1] - grow_x) & (cols[:-1] < probe[3] + grow_x)
    assert fore[~(inside_y[:, None] & inside_x[None])].sum() < 1e-6
    centre = (fore.sum(1) * (rows[:-1] + 0.025)).sum(), (fore.sum(0) * (cols[:-1] + 0.025)).sum()
    assert abs(centre[0] - 0.675) < 0.06 and abs(centre[1] - 0.75) < 0.06, centre


def test_captured_rows_equal_eager_attention(family_pair) -> None:
    model, processor, eager = family_pair
    teacher = VLMTeacher(model, processor, layers=(0, 2))
    texts = [
        teacher.family.render(
            processor, "Classify foreground vs. background", "{foreground: [cat], background: [sky]}"
        ),
        teacher.family.render(
            processor, "Locate all dog instances", "{objects: [dog], background: [grass, water]}"
        ),
    ]
    images = [_noise(3, 120, 200), _noise(4, 300, 90)]  # different token counts: padded columns
    enc = processor(
        text=texts, images=teacher.family.batch_images(images), padding=True, padding_side="right",
        return_tensors="pt",
    )  # fmt: skip
    inputs = {**teacher._device_inputs(enc), "attention_mask": enc["attention_mask"]}
    cols, counts = image_columns(enc["input_ids"], model.config.image_token_id)
    last = enc["attention_mask"].sum(1) - 1
    rows = pad_rows(
        [
            [int(c[0]), int(c[n - 1]) + 1, int(t) - 3, int(t)]
            for c, n, t in zip(cols, counts, last, strict=True)
        ]
    )
    with torch.no_grad(), teacher.capture.capturing(rows, cols) as got:
        model.model(**inputs, use_cache=False)
    with torch.no_grad():
        ref_all = eager.model(**inputs, use_cache=False, output_attentions=True).attentions
    for layer in (0, 2):
        full = ref_all[layer]  # (B, H, T, T)
        b, h = full.shape[:2]
        ref = full.gather(2, rows[:, None, :, None].expand(b, h, -1, full.shape[-1]))
        ref = ref.gather(3, cols[:, None, None, :].expand(b, h, rows.shape[1], -1))
        for i, n in enumerate(counts):
            torch.testing.assert_close(got[layer][i, ..., :n], ref[i, ..., :n], rtol=1e-5, atol=1e-6)


def test_family_is_picked_from_the_config(family_pair) -> None:
    model, _, _ = family_pair
    assert family_for(model.config) is family_for(model.config.to_dict())
    with pytest.raises(ValueError, match=r"no lfi VLM family for model_type 'blip'.*a module .* \+ a row"):
        family_for({"model_type": "blip"})


def test_batch_dense_and_generated_backgrounds(family_pair) -> None:
    """Each family: a batch equals its images one by one (padding, token counts), Eq. 12 entries, generation."""
    model, processor, _ = family_pair
    teacher = VLMTeacher(model, processor, layers=(1, 2), grid=(6, 9))
    batch = [
        {"image": _noise(5, 120, 200), "class_name": "cat"},
        {"image": _noise(6, 300, 90), "class_name": "red fox"},
    ]
    together = teacher(batch)
    for i, sample in enumerate(batch):
        torch.testing.assert_close(together.fore[i], teacher([sample]).fore[0], rtol=1e-4, atol=1e-6)
    dense = VLMTeacher(model, processor, task="dense", layers=(1,))
    boxes = torch.tensor([[5.0, 5.0, 60.0, 50.0], [100.0, 20.0, 190.0, 110.0]])
    out = dense(
        [{"image": _noise(7, 120, 200), "class_name": "dog", "boxes": boxes, "box_names": ["dog", "person"]}]
    )
    assert (
        torch.isclose(out.fore[0].sum(), torch.tensor(2.0))
        and out.info[0]["prompt"] == "Locate all dog and person instances"
    )
    if not teacher.family.generates:
        with pytest.raises(ValueError, match="'generate' is not supported"):
            VLMTeacher(model, processor, background_mode="generate")
        return
    generating = VLMTeacher(model, processor, layers=(1,), background_mode="generate", max_new_tokens=4)
    out = generating(batch)
    assert torch.isfinite(out.fore).all() and all(i["background_source"] != "fixed" for i in out.info)
    with pytest.raises(ValueError, match="grid"):
        VLMTeacher(model, processor, grid=(0, 4))


def test_paligemma_answer_is_a_causal_suffix_after_a_bidirectional_prefix(build_family) -> None:
    model, processor = build_family("paligemma")(register_capture_attention())
    eager, _ = build_family("paligemma")("eager")
    eager.load_state_dict(model.state_dict())
    teacher = VLMTeacher(model, processor, layers=(1,))
    answer = "{foreground: [cat], background: [sky]}"
    text = teacher.family.render(processor, "Classify foreground vs. background", answer)
    enc = processor(
        text=[text], images=[_noise(8, 120, 200)], return_offsets_mapping=True, return_tensors="pt"
    )
    full = teacher.family.expand(processor, text, (120, 200), 64)
    at = full.rfind(answer)
    first = token_rows(enc["offset_mapping"][0], (at, at + len(answer)))[0]
    teacher.family.mark_answer(enc, 0, first)
    assert enc["token_type_ids"][0, :first].sum() == 0 and bool((enc["token_type_ids"][0, first:] == 1).all())
    inputs = teacher._device_inputs(enc)
    with torch.no_grad():
        att = eager.model(**inputs, use_cache=False, output_attentions=True).attentions[1][0]  # (H, T, T)
    assert att[:, 0, first - 1].min() > 0  # the prefix is bidirectional: an image token sees the prompt's end
    assert att[:, first - 1, first:].abs().sum() == 0  # the prefix does not see the answer
    assert att[:, first, first + 1 :].abs().sum() == 0  # the answer is causal
    rows = torch.arange(first, enc["input_ids"].shape[1])[None]
    cols, _ = image_columns(enc["input_ids"], model.config.image_token_id)
    with torch.no_grad(), teacher.capture.capturing(rows, cols) as got:
        model.model(**inputs, use_cache=False)
    torch.testing.assert_close(got[1][0], att[:, rows[0]][:, :, cols[0]], rtol=1e-5, atol=1e-6)
