"""One interaction-model base (issue 29 item 4): I-ViT and I-DETR convert layers and serve map requests
through `lfi.models.interaction`, and the demo's cached-prefix step is the engine's step."""

from __future__ import annotations

import pytest
import timm
import torch

from lfi.models import MapRequest, interactionize
from lfi.models.interaction import InteractionLayer, InteractionModel
from lfi.train.losses import classification_criterion
from lfi.train.tasks import ClassificationTask, step_losses


def tiny_ivit(**overrides):  # noqa: ANN003, ANN201
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=5)
    return interactionize(vit, **overrides)


def test_ivit_and_idetr_share_the_base() -> None:
    from lfi.models.detr import build_detr
    from lfi.models.idetr import interactionize_detr

    for model in (
        tiny_ivit(layers=(1, 2, 3)),
        interactionize_detr(build_detr("detection", "detr", 5, "tiny", 7)),
    ):
        assert isinstance(model, InteractionModel)
        layers = model.interaction_layers()
        assert layers and all(isinstance(layer, InteractionLayer) for layer in layers.values())
        added = [p for layer in layers.values() for m in (layer.iq, layer.control) for p in m.parameters()]
        assert {id(p) for p in model.interaction_parameters()} == {id(p) for p in added}


def test_a_failed_pass_leaves_no_request_behind() -> None:
    model = tiny_ivit()
    with pytest.raises(RuntimeError, match="boom"), model.requesting(MapRequest.of("fused")) as chosen:
        assert all(layer.request is not None for layer in chosen.values())
        raise RuntimeError("boom")
    assert all(layer.request is None and layer.maps == {} for layer in model.interaction_layers().values())


def test_a_frozen_prefix_computed_once_gives_the_engines_step() -> None:
    """The demo caches the tokens entering the first trained block; from them, the engine's step function
    gives the same losses (and maps) as from the images."""
    model = tiny_ivit(layers=(2, 3)).eval()
    criterion = classification_criterion(align_weight=1.0)
    x = torch.randn(3, 3, 32, 32)
    batch = {"image": x, "label": torch.tensor([0, 1, 2]), "map": torch.rand(3, 4, 4).softmax(-1),
             "map_valid": torch.ones(3, dtype=torch.bool)}  # fmt: skip
    first = min(model.converted)
    tokens = model.tokens_before(x, first)
    assert tokens.shape == (3, 17, model.vit.embed_dim)
    whole = step_losses(ClassificationTask(), model, criterion, batch)
    cached = step_losses(ClassificationTask(start=first), model, criterion, {**batch, "image": tokens})
    assert whole.keys() == cached.keys() and "align" in whole
    for name in whole:
        torch.testing.assert_close(cached[name], whole[name])
    torch.testing.assert_close(model(tokens, start=first), model(x))
