"""I-DETR conversion: equality with the plain model, maps, padding, options, overhead."""

from __future__ import annotations

import pytest
import torch

from lfi.models.idetr import DetrInteractionAttention, IDETRConfig, interactionize_detr
from lfi.models.interaction_attention import MapRequest
from lfi.train.detection import build_detr

CASES = [("detection", "detr"), ("segmentation", "detr"), ("detection", "conditional_detr")]


@pytest.mark.parametrize(("task", "arch"), CASES)
@pytest.mark.parametrize("iq", [False, True])
def test_converted_model_equals_plain(task, arch, iq, pixels):
    detr = build_detr(task, arch, num_labels=5, size="tiny", num_queries=7).eval()
    x, mask = pixels
    with torch.no_grad():
        ref = detr(pixel_values=x, pixel_mask=mask)
        idetr = interactionize_detr(
            detr, interaction_queries=iq, gated_control=iq, constraint="interaction" if iq else "none"
        ).eval()
        out = idetr(pixel_values=x, pixel_mask=mask)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pred_boxes, ref.pred_boxes, rtol=0, atol=1e-5)
    if task == "segmentation":
        torch.testing.assert_close(out.pred_masks, ref.pred_masks, rtol=0, atol=1e-4)
    layers = idetr.interaction_layers()
    assert len(layers) == 2 and all(isinstance(m, DetrInteractionAttention) for m in layers.values())


def test_trained_interaction_queries_change_the_output(pixels):
    """The equality above must be able to fail: perturbing P'_q changes the detections."""
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7)).eval()
    x, mask = pixels
    with torch.no_grad():
        before = idetr(pixel_values=x, pixel_mask=mask).logits
        idetr.interaction_layers()[0].iq.weight.add_(
            torch.randn_like(idetr.interaction_layers()[0].iq.weight)
        )
        after = idetr(pixel_values=x, pixel_mask=mask).logits
    assert (after - before).abs().max() > 1e-4


def test_maps_from_one_pass_respect_padding(pixels):
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7)).eval()
    x, mask = pixels
    with torch.no_grad():
        out = idetr(pixel_values=x, pixel_mask=mask, request=MapRequest.of("agt", "vfm", "fused"))
    assert out.grid_mask.shape == (2, 3, 4)
    assert out.grid_mask[0].all() and out.grid_mask[1].sum() == 4 and out.grid_mask[1, :2, :2].all()
    assert set(out.maps) == {0, 1}
    agt = out.maps[1]["agt"]
    assert agt.shape == (2, 8, 12, 12)
    torch.testing.assert_close(agt.sum(-1), torch.ones(2, 8, 12))
    padded_keys = ~out.grid_mask[1].flatten()
    assert agt[1][..., padded_keys].abs().max() == 0  # no attention to padding keys
    torch.testing.assert_close(out.maps[1]["agt"], out.maps[1]["vfm"])  # freshly converted: P'_q = P_q
    assert idetr.interaction_layers()[1].request is None and idetr.interaction_layers()[1].maps == {}


def test_forward_aligned_reads_supervised_map_of_deeper_half(pixels):
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7))
    assert idetr.align_layers == (1,)
    out = idetr.forward_aligned(pixel_values=pixels[0], pixel_mask=pixels[1])
    assert set(out.maps) == {1} and set(out.maps[1]) == {"agt"}
    plain = interactionize_detr(
        build_detr("detection", "detr", 5, "tiny", 7), interaction_queries=False, gated_control=False,
        constraint="none",
    )  # fmt: skip
    assert plain.forward_aligned(pixel_values=pixels[0], pixel_mask=pixels[1]).maps == {}


def test_options_layers_freeze_and_errors():
    detr = build_detr("detection", "detr", 5, "tiny", 7)
    idetr = interactionize_detr(detr, layers=(-1,), freeze_original=True)
    assert idetr.converted == (1,)
    trainable = {n for n, p in idetr.named_parameters() if p.requires_grad}
    assert all(
        ".iq." in n or ".control." in n or "class_labels" in n or "bbox_predictor" in n for n in trainable
    )
    assert any(".iq." in n for n in trainable) and any("class_labels" in n for n in trainable)
    with pytest.raises(ValueError, match="layers"):
        interactionize_detr(detr, layers=(5,))
    with pytest.raises(ValueError, match="align_layers"):
        interactionize_detr(detr, layers=(1,), align_layers=(0,))
    with pytest.raises(ValueError, match="gated_control"):
        IDETRConfig(interaction_queries=False)
    with pytest.raises(TypeError, match="backbone"):
        interactionize_detr(torch.nn.Linear(2, 2))


def test_parameter_overhead_on_detr_r50():
    """Full-size DETR-R50 on the meta device: + P'_q and a gate in each of the 6 encoder layers."""
    with torch.device("meta"):
        detr = build_detr("detection", "detr", num_labels=91, size="r50")
        base = sum(p.numel() for p in detr.parameters())
        idetr = interactionize_detr(detr, inplace=True)
    extra = sum(p.numel() for p in idetr.interaction_parameters())
    # 6 x (256 * 256 + 256) for P'_q + 6 x (16 * 8 + 8 + 8 * 16 + 16) for the gates
    assert extra == 6 * (256 * 256 + 256) + 6 * (16 * 8 + 8 + 8 * 16 + 16) == 396_432
    assert 41.0e6 < base < 42.0e6  # the paper's 41.5M
    assert sum(p.numel() for p in idetr.parameters()) == base + extra


def test_state_dict_holds_each_weight_once_and_saves_as_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    idetr = interactionize_detr(build_detr("detection", "conditional_detr", 5, "tiny", 7))
    state = idetr.state_dict()
    assert all(k.startswith("detr.") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    fresh = interactionize_detr(build_detr("detection", "conditional_detr", 5, "tiny", 7))
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
