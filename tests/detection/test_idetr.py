"""I-DETR conversion: equality with the plain model, maps, padding, batch independence, dtype and device,
options, overhead."""

from __future__ import annotations

import pytest
import torch

from lfi.models.detr import build_detr
from lfi.models.idetr import DetrInteractionAttention, IDETRConfig, interactionize_detr
from lfi.models.interaction_attention import MapRequest

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
    idetr = interactionize_detr(detr, layers=(-1,), freeze_backbone=True)
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


def _with_active_gates(idetr):
    """Random gate output layers and interaction queries: the gate, and C_AGT != C_VFM, matter."""
    with torch.no_grad():
        for layer in idetr.interaction_layers().values():
            torch.nn.init.normal_(layer.control.fc2.weight, std=1.0)
            torch.nn.init.normal_(layer.control.fc2.bias, std=1.0)
            layer.iq.weight.add_(0.1 * torch.randn_like(layer.iq.weight))
    return idetr


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_an_image_gets_the_same_detections_alone_and_padded_in_a_batch(attn):
    """The gate counts each image's real keys, not the padded batch's: a 64x64 image batched with a larger one
    (so padded to its size) gets the detections it gets alone. HF masks padding as bool (sdpa) or additively
    (eager); the converted layer reads both. The CNN's features near an image's border see a batch's padding
    (in any padded CNN batch), so the batched pass is handed the image's own backbone features: what is
    compared is the transformer, where padding is masked."""
    detr = build_detr("detection", "detr", 5, "tiny", 7).eval()
    if attn == "eager":  # sdpa is the default (the backbone refuses to be set to it)
        detr.set_attn_implementation(attn)
    assert detr.config._attn_implementation == attn
    idetr = _with_active_gates(interactionize_detr(detr)).eval()
    small, large = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 96, 128)
    batch = torch.zeros(2, 3, 96, 128)
    batch[0, :, :64, :64], batch[1] = small[0], large[0]
    mask = torch.zeros(2, 96, 128, dtype=torch.long)
    mask[0, :64, :64], mask[1] = 1, 1
    whole = torch.ones(1, 64, 64, dtype=torch.long)
    with torch.no_grad():
        alone = idetr(pixel_values=small, pixel_mask=whole)
        own = idetr.core.backbone(small, whole)[-1][0]  # (1, C, 2, 2): the encoder's input grid

        def own_features(module, inputs, features):
            feature_map, grid_mask = features[-1]
            feature_map = feature_map.clone()
            feature_map[:1, :, :2, :2] = own
            return [*features[:-1], (feature_map, grid_mask)]

        handle = idetr.core.backbone.register_forward_hook(own_features)
        try:
            batched = idetr(pixel_values=batch, pixel_mask=mask)
        finally:
            handle.remove()
        fresh = interactionize_detr(detr).eval()(pixel_values=small, pixel_mask=whole)
    assert (alone.logits - fresh.logits).abs().max() > 1e-3  # the gates do matter
    torch.testing.assert_close(batched.logits[:1], alone.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched.pred_boxes[:1], alone.pred_boxes, rtol=1e-4, atol=1e-5)


def test_bf16_detr_converts_and_trains_in_bf16(pixels):
    """P'_q and the gate take q_proj's dtype, so a converted bf16 DETR runs forward and backward as is."""
    idetr = interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7).to(torch.bfloat16))
    x, mask = pixels
    out = idetr(pixel_values=x.bfloat16(), pixel_mask=mask, request=MapRequest.of("agt"))
    loss = out.outputs.logits.float().square().mean() + out.maps[1]["agt"].float().square().sum()
    loss.backward()
    control = idetr.interaction_layers()[1].control
    assert control.fc2.weight.dtype == torch.bfloat16 and control.fc2.weight.grad is not None


@pytest.mark.gpu
def test_cuda_detr_converts_and_trains_on_the_gpu(pixels):
    """Converted on the GPU, P'_q and the gates are made there; a padded batch runs forward and backward
    (backend auto: the kernels, with the padding as their key mask), with the detections of the reference."""
    detr = build_detr("detection", "detr", 5, "tiny", 7).cuda().eval()
    idetr = _with_active_gates(interactionize_detr(detr, attention="auto")).eval()
    assert all(p.is_cuda for p in idetr.interaction_parameters())
    x, mask = (t.cuda() for t in pixels)
    out = idetr(pixel_values=x, pixel_mask=mask, request=MapRequest.of("agt", rows=1))
    (out.outputs.logits.square().mean() + out.maps[1]["agt"].square().sum()).backward()
    assert all(p.grad is not None for p in idetr.interaction_parameters())
    for layer in idetr.interaction_layers().values():
        layer.backend = "reference"
    with torch.no_grad():
        ref = idetr(pixel_values=x, pixel_mask=mask)
    torch.testing.assert_close(out.outputs.logits.detach(), ref.logits, rtol=1e-3, atol=1e-3)
