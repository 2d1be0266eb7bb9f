"""The frozen trunk's CUDA graphs (`lfi.models.graphs`): which models get them, that the graphed forward is
timm's, and (on a GPU) that replays give the eager values and follow the parameters."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pytest
import timm
import torch

from lfi.models.graphs import CAPTURE_AT, GraphedForward, is_deterministic
from lfi.models.ivit import TABLE3, InteractionViT


def tiny_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=5,
        **kwargs,
    )  # fmt: skip


def probe(vit: torch.nn.Module | None = None, **switches) -> InteractionViT:
    config = replace(TABLE3["vit"], **{"freeze_backbone": True, **switches})
    return InteractionViT(vit if vit is not None else tiny_vit(), config)


def test_only_a_fixed_trunk_gets_graphs():
    assert probe().trunk_graphs is not None
    assert probe(cuda_graphs=False).trunk_graphs is None
    # something before the classifier trains, or draws random numbers: eager
    assert probe(freeze_backbone=False).trunk_graphs is None
    assert InteractionViT(tiny_vit(), replace(TABLE3["iq_ic_gc"], freeze_backbone=True)).trunk_graphs is None
    assert probe(tiny_vit(drop_path_rate=0.1)).trunk_graphs is None
    assert probe(tiny_vit(drop_rate=0.1)).trunk_graphs is None


def test_is_deterministic_finds_every_kind_of_dropout():
    assert is_deterministic(tiny_vit())
    assert not is_deterministic(tiny_vit(attn_drop_rate=0.1))
    assert not is_deterministic(tiny_vit(patch_drop_rate=0.5))
    assert not is_deterministic(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout2d(0.2)))


def test_the_graphed_path_computes_timm_forward_on_the_cpu():
    vit = tiny_vit().eval()
    model = probe(copy.deepcopy(vit)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), vit(x))
    # the classifier still learns: its gradient flows through the (CPU, eager) path
    model(x).sum().backward()
    assert model.vit.head.weight.grad is not None
    assert all(p.grad is None for p in model._trunk_tensors())


def test_the_state_dict_and_copies_do_not_carry_graphs():
    model = probe()
    assert list(model.state_dict()) == list(probe(cuda_graphs=False).state_dict())
    model.trunk_graphs.graphs[("stand-in",)] = object()
    copied = copy.deepcopy(model)
    assert copied.trunk_graphs is not model.trunk_graphs and not copied.trunk_graphs.graphs
    # the copy's trunk tensors are its own, not the original's
    assert all(a is not b for a, b in zip(copied._trunk_tensors(), model._trunk_tensors(), strict=True))
    assert not pickle.loads(pickle.dumps(model.trunk_graphs)).graphs


def test_the_trunk_tensors_are_every_tensor_but_the_classifier():
    model = probe()
    head = {id(p) for p in model.vit.head.parameters()}
    expected = [p for p in model.vit.parameters() if id(p) not in head]
    assert [id(t) for t in model._trunk_tensors()] == [id(p) for p in expected]
    # a replaced parameter is the one read
    new = torch.nn.Parameter(torch.zeros_like(model.vit.cls_token), requires_grad=False)
    model.vit.cls_token = new
    assert any(t is new for t in model._trunk_tensors())


def test_eager_reasons():
    cpu = torch.zeros(1)
    assert "CUDA" in GraphedForward.eager_reason(cpu, [])


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def settled(model: InteractionViT, x: torch.Tensor) -> torch.Tensor:
    """model(x) called until its signature is captured; the last call's output (a replay)."""
    for _ in range(CAPTURE_AT):
        out = model(x)
    return out


@pytest.mark.gpu
@gpu
def test_replays_equal_the_eager_forward_bit_for_bit_under_autocast():
    vit = tiny_vit().cuda().eval()
    model = probe(copy.deepcopy(vit)).cuda().train()
    for batch in (4, 3, 2):
        for call in range(CAPTURE_AT + 1):  # eager calls, the capture, a replay
            x = torch.randn(batch, 3, 32, 32, device="cuda")
            if batch == 2 and call == CAPTURE_AT - 1:
                break  # a signature seen fewer times is never captured
            with torch.autocast("cuda", dtype=torch.bfloat16):
                got, expected = model(x), vit(x)
            assert torch.equal(got, expected)
    assert len(model.trunk_graphs.graphs) == 2
    # the classifier's gradient is the eager one's
    x = torch.randn(4, 3, 32, 32, device="cuda")
    model(x).square().sum().backward()
    vit(x).square().sum().backward()
    assert torch.equal(model.vit.head.weight.grad, vit.head.weight.grad)


@pytest.mark.gpu
@gpu
def test_replays_follow_updated_moved_and_unfrozen_parameters():
    model = probe().cuda().eval()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with torch.no_grad():
        settled(model, x)
        assert len(model.trunk_graphs.graphs) == 1
        # an in-place update is read by the next replay
        model.vit.blocks[0].mlp.fc1.weight.mul_(2)
        assert torch.equal(model(x), model.vit(x))
        # moved parameters (new memory): the graphs are dropped, the calls start again
        model.double().float()
        assert torch.equal(model(x), model.vit(x)) and not model.trunk_graphs.graphs
        assert torch.equal(settled(model, x), model.vit(x)) and len(model.trunk_graphs.graphs) == 1
    # a trunk that trains again runs eagerly, with its gradients
    model.vit.blocks[0].mlp.fc1.weight.requires_grad_(True)
    model(x).sum().backward()
    assert model.vit.blocks[0].mlp.fc1.weight.grad is not None


@pytest.mark.gpu
@gpu
def test_at_most_limit_signatures_are_captured():
    model = probe().cuda().eval()
    model.trunk_graphs.limit = 2
    with torch.no_grad():
        for batch in (1, 2, 3, 4):
            x = torch.randn(batch, 3, 32, 32, device="cuda")
            assert torch.equal(settled(model, x), model.vit(x))
    assert len(model.trunk_graphs.graphs) == 2
