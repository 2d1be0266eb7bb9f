"""Detection configs load and validate; DETR targets are built as HF expects them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from lfi.train.detection import load_detection_config, register
from lfi.train.detection_data import detr_labels, fraction_subset

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "detection").glob("*.yaml"))


def test_table_configs_exist_and_load():
    names = {p.stem for p in CONFIGS}
    assert {"table6_det_cvlm", "table6_det_base", "table6_seg_cvlm", "table6_seg_base", "table7_cvlm",
            "table7_base"} <= names  # fmt: skip
    for path in CONFIGS:
        cfg = load_detection_config(path)
        assert (cfg.teacher.name == "none") == (cfg.model.constraint == "none"), path.name
        if cfg.teacher.name != "none":
            assert cfg.teacher.teacher, f"{path.name}: the teacher used must be named"


def test_overrides_and_errors(tmp_path):
    cfg = load_detection_config(CONFIGS[0], ["optim.epochs=1", "model.size=tiny"])
    assert cfg.optim.epochs == 1 and cfg.model.size == "tiny"
    with pytest.raises(ValueError, match="unknown key .optim.epoch."):
        load_detection_config(None, ["optim.epoch=1"])
    with pytest.raises(ValueError, match="arch"):
        load_detection_config(None, ["arch=yolo"])
    with pytest.raises(ValueError, match="needs a teacher"):
        load_detection_config(None, ["model.constraint=interaction"])
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train-det", "x.yaml", "--set", "optim.epochs=2"])
    assert args.set == ["optim.epochs=2"] and callable(args.func)


def test_detr_labels_normalised_cxcywh_and_padded_masks():
    target = {
        "size": (20, 40),
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[0.0, 0.0, 20.0, 10.0]]), format="XYXY", canvas_size=(20, 40)
        ),
        "labels": torch.tensor([3]),
        "masks": tv_tensors.Mask(torch.ones(1, 20, 40, dtype=torch.uint8)),
    }
    (label,) = detr_labels([target], (32, 48))
    torch.testing.assert_close(label["boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert label["class_labels"].tolist() == [3] and label["masks"].shape == (1, 32, 48)
    assert label["masks"][0, 20:].sum() == 0 and label["masks"][0, :20, :40].min() == 1


def test_fraction_subset_seeded_and_nested():
    data = list(range(100))
    small, large = fraction_subset(data, 0.1, seed=3), fraction_subset(data, 0.5, seed=3)
    assert len(small) == 10 and set(small.indices) <= set(large.indices)
    assert fraction_subset(data, 0.1, seed=3).indices == small.indices
    with pytest.raises(ValueError, match="fraction"):
        fraction_subset(data, 0.0)


@pytest.mark.parametrize(("norm", "scratch"), [("auto", True), ("frozen_bn", False), ("group_norm", True)])
def test_backbone_norm_from_scratch_trains_the_whole_backbone(norm, scratch):
    from lfi.train.detection import build_model

    cfg = load_detection_config(
        None, ["model.size=tiny", "model.constraint=none", f"model.backbone_norm={norm}"]
    )
    backbone = build_model(cfg, num_labels=3).core.backbone
    frozen_norms = [m for m in backbone.modules() if type(m).__name__.endswith("FrozenBatchNorm2d")]
    group_norms = [m for m in backbone.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert (not frozen_norms and len(group_norms) > 0) == scratch
    assert all(p.requires_grad for p in backbone.parameters()) == scratch
    with pytest.raises(ValueError, match="model.backbone_norm"):
        load_detection_config(None, ["model.backbone_norm=layer"])


def test_float_fields_accept_exponent_notation():
    cfg = load_detection_config(
        None, ["optim.lr=1e-3", "optim.weight_decay=0", "align.weight=2", "model.constraint=none"]
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.weight_decay, float) and cfg.align.weight == 2.0
    with pytest.raises(ValueError, match="optim.lr. must be float"):
        load_detection_config(None, ["optim.lr=fast", "model.constraint=none"])
