"""Every baseline's loss in the shared harness: which terms exist, which parameters they reach, their values."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from lfi.train.build import build_criterion, build_model
from lfi.train.data import ExperimentData
from lfi.train.distill import imagenet_indices
from lfi.train.engine import cosine_with_warmup
from lfi.train.losses import kd_loss
from lfi.train.tasks import ClassificationTask
from tests.train.conftest import IMG, tiny_config


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    maps = torch.zeros(n, 4, 4)
    maps[:, 1:3, 1:3] = 0.25  # the object in the centre
    valid = torch.tensor([True] * (n - 1) + [False])
    maps[~valid] = 0
    return {
        "image": torch.randn(n, 3, IMG, IMG),
        "label": torch.arange(n) % 4,
        "map": maps,
        "map_valid": valid,
    }


class LfiModule(nn.Module):
    """What the engine runs per training step: the built model and criterion of a config."""

    def __init__(self, cfg, num_classes: int, class_wnids: list[str] | None = None) -> None:
        super().__init__()
        data = ExperimentData(None, None, {}, [str(i) for i in range(num_classes)], class_wnids)
        self.model = build_model(cfg, num_classes)
        self.criterion = build_criterion(cfg, self.model, data)
        self.task = ClassificationTask()

    @property
    def kd_teacher(self) -> nn.Module:
        return self.criterion.terms["kd"].teacher

    def losses(self, b: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.task.forward(self.model, b)
        return outputs["logits"], self.criterion(outputs, b)


def terms(tmp_path: Path, variant: str, **sections) -> tuple[LfiModule, dict[str, torch.Tensor]]:
    wnids = sections.pop("wnids", None)
    module = LfiModule(tiny_config(tmp_path, variant, **sections), num_classes=4, class_wnids=wnids)
    _, out = module.losses(batch())
    return module, out


def grads(module: LfiModule, loss: torch.Tensor) -> set[str]:
    module.zero_grad()
    loss.backward()
    return {n for n, p in module.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_plain_vit_has_task_loss_only(tmp_path: Path):
    module, out = terms(tmp_path, "vit")
    assert set(out) == {"task", "loss"} and torch.equal(out["loss"], out["task"])
    assert "align" not in module.criterion.weight_dict


def test_extra_queries_without_constraint(tmp_path: Path):
    module, out = terms(tmp_path, "iq_gc")
    assert set(out) == {"task", "loss"} and "align" not in module.criterion.weight_dict
    assert any(".iq." in n for n in grads(module, out["loss"]))  # the extra queries do learn from the task


def test_ivit_aligns_interaction_queries(tmp_path: Path):
    module, out = terms(tmp_path, "iq_ic_gc", loss={"align_weight": 0.5})
    assert set(out) == {"task", "align", "loss"} and out["align"] > 0
    torch.testing.assert_close(out["loss"], out["task"] + 0.5 * out["align"])
    assert any(".iq." in n for n in grads(module, out["align"]))


def test_attention_transfer_aligns_original_queries(tmp_path: Path):
    module, out = terms(tmp_path, "ic_original")
    assert set(out) == {"task", "align", "loss"} and out["align"] > 0
    touched = grads(module, out["align"])
    assert any(".qkv." in n for n in touched) and not any(".iq." in n for n in touched)


def test_invalid_maps_are_left_out(tmp_path: Path):
    module = LfiModule(tiny_config(tmp_path, "iq_ic_gc"), num_classes=4)
    b = batch()
    _, full = module.losses(b)
    b["map"][-1] = torch.rand(4, 4)  # garbage under map_valid=False must not count
    _, again = module.losses(b)
    torch.testing.assert_close(full["align"], again["align"])


def test_kd_loss_values():
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    assert kd_loss(t, t, 4.0).abs() < 1e-6
    expected = (torch.softmax(t / 2, -1) * (torch.log_softmax(t / 2, -1) - torch.log_softmax(s / 2, -1))).sum(
        -1
    )
    torch.testing.assert_close(kd_loss(s, t, 2.0), expected.mean() * 4)
    with pytest.raises(ValueError, match="student logits"):
        kd_loss(s, t[:, :3], 1.0)


def test_result_oriented_kd(tmp_path: Path):
    """ViT + KL to a frozen ImageNet classifier's logits, restricted to the dataset's classes by wnid."""
    teacher = timm.create_model("deit_tiny_patch16_224", depth=1)  # the shared teacher's layout, one block
    save_file(teacher.state_dict(), str(tmp_path / "t.safetensors"))
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    wnids = ["n00000007", "n00000002", "n00000500", "n00000999"]
    kd = {
        "temperature": 2.0,
        "checkpoint": str(tmp_path / "t.safetensors"),
        "synsets": str(synsets),
    }
    cfg = tiny_config(
        tmp_path, "vit", loss={"kd": kd, "kd_weight": 0.7}, teacher={"name": "none", "store": None}
    )
    cfg.loss.kd.model = "deit_tiny_patch16_224"
    with pytest.raises(ValueError, match="class wnids"):
        LfiModule(cfg, num_classes=4)
    with pytest.raises(RuntimeError):  # a checkpoint of another depth does not load silently
        LfiModule(cfg, num_classes=4, class_wnids=wnids)
    teacher = timm.create_model("deit_tiny_patch16_224")
    save_file(teacher.state_dict(), str(tmp_path / "t.safetensors"))
    module = LfiModule(cfg, num_classes=4, class_wnids=wnids)
    b = batch()
    logits, out = module.losses(b)
    assert set(out) == {"task", "kd", "loss"}
    imagenet_logits = teacher.eval()(
        torch.nn.functional.interpolate(b["image"], size=224, mode="bilinear", antialias=True)
    )
    torch.testing.assert_close(
        out["kd"], kd_loss(logits, imagenet_logits[:, [7, 2, 500, 999]], 2.0), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(out["loss"], out["task"] + 0.7 * out["kd"])
    out["loss"].backward()
    assert all(p.grad is None for p in module.kd_teacher.parameters())
    assert imagenet_indices(["n00000999", "n00000002"], synsets) == [999, 2]
    with pytest.raises(ValueError, match="not ImageNet-1k wnids"):
        imagenet_indices(["n99999999"], synsets)


def test_cosine_schedule_with_warmup():
    values = [cosine_with_warmup(s, total=100, warmup=10, min_ratio=0.01) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
