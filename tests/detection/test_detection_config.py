"""Detection configs (one schema with classification, `lfi.config`) load and validate; DETR targets are built
as HF expects them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torchvision import tv_tensors

from lfi.config import DETR_ARCHS, ConfigError, load_config
from lfi.data.detection import fraction_subset
from lfi.train.tasks import detr_labels

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "detection").glob("*.yaml"))
#: A plain DETR (Table 3 row 'vit', no teacher): the detection defaults every test starts from.
DET = ["task=detection", "model.name=detr", "model.variant=vit", "data.dataset=coco"]
#: The I-DETR row (interaction queries + constraint + gate), aligned to a teacher.
IQ_IC_GC = "model.variant=iq_ic_gc"


def test_table_configs_exist_and_load():
    names = {p.stem for p in CONFIGS}
    assert {"table6_det_cvlm", "table6_det_base", "table6_seg_cvlm", "table6_seg_base", "table7_cvlm",
            "table7_base"} <= names  # fmt: skip
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.task in ("detection", "segmentation") and cfg.model.name in DETR_ARCHS, path.name
        assert (cfg.teacher.name == "none") == (not cfg.aligned), path.name
        if cfg.teacher.name != "none":
            assert cfg.teacher.name in ("llava", "vit", "oracle"), (
                f"{path.name}: the teacher used must be named"
            )
        assert cfg.experiment == f"detection/{path.stem}", path.name
        if path.stem != "coco_base":  # every row sits on the shared recipe, stating only what differs
            assert "base" in yaml.safe_load(path.read_text()), path.name
    rows = {p.stem: load_config(p) for p in CONFIGS}
    for name, cfg in rows.items():  # a w/ C_VLM row differs from its w/o C_VLM row by the conversion only
        if name.endswith("_cvlm"):
            plain = rows[name.replace("_cvlm", "_base")]
            assert (cfg.task, cfg.model.name, cfg.data, cfg.optim, cfg.trainer) == (
                plain.task, plain.model.name, plain.data, plain.optim, plain.trainer
            ), name  # fmt: skip
            assert plain.model.variant == "vit" and cfg.model.variant == "iq_ic_gc", name


def test_overrides_and_errors():
    cfg = load_config(CONFIGS[0], ["trainer.max_epochs=1", "model.size=tiny"])
    assert cfg.trainer.max_epochs == 1 and cfg.model.size == "tiny"
    with pytest.raises(ConfigError, match="unknown key 'trainer.max_epoch'"):
        load_config(None, [*DET, "trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match="model.name"):
        load_config(None, ["task=detection", "model.name=yolo", "model.variant=vit"])
    with pytest.raises(ConfigError, match="teacher.name"):  # an aligned variant needs a teacher
        load_config(None, ["task=detection", "model.name=detr", IQ_IC_GC])
    with pytest.raises(ConfigError, match="teacher.name=none"):  # a teacher but nothing aligned to it
        load_config(None, [*DET, "teacher.name=oracle"])
    from lfi.cli import build_parser

    args = build_parser().parse_args(["train", "x.yaml", "trainer.max_epochs=2", "model.size=tiny"])
    assert args.overrides == ["trainer.max_epochs=2", "model.size=tiny"] and callable(args.func)


@pytest.mark.parametrize(
    ("override", "key"),
    [  # the old detection schema's spellings are unknown keys, named with their dotted path
        ("arch=detr", "arch"), ("optim.epochs=1", "optim.epochs"), ("align.weight=1", "align"),
        ("model.constraint=none", "model.constraint"), ("model.freeze_original=true", "model.freeze_original"),
        ("data.fraction=0.1", "data.fraction"), ("teacher.teacher=llava", "teacher.teacher"),
    ],
)  # fmt: skip
def test_a_bad_key_names_the_dotted_key(override, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_config(None, [*DET, override])


def test_detection_validation():
    seg = load_config(None, [*DET, "task=segmentation"])
    assert seg.task == "segmentation" and seg.model.name == "detr"
    with pytest.raises(ConfigError, match="segmentation needs model.name=detr"):
        load_config(None, [*DET, "task=segmentation", "model.name=conditional_detr"])
    # the oracle without a store: maps on the fly from each transformed image's ground truth (detection only)
    det = load_config(
        None, ["task=detection", "model.name=conditional_detr", IQ_IC_GC, "teacher.name=oracle"]
    )
    assert det.aligned and det.teacher.store is None and det.teacher.source == "boxes"
    masks = load_config(None, ["task=segmentation", "model.name=detr", IQ_IC_GC, "teacher.name=oracle",
                               "teacher.source=masks", "data.dataset=coco"])  # fmt: skip
    assert masks.teacher.source == "masks"
    with pytest.raises(ConfigError, match="teacher.store"):  # classification reads the oracle from a store
        load_config(None, [IQ_IC_GC, "teacher.name=oracle"])
    with pytest.raises(ConfigError, match="teacher.store"):  # a VLM teacher is always read from a store
        load_config(None, ["task=detection", "model.name=detr", IQ_IC_GC, "teacher.name=llava"])
    stored = load_config(
        None, ["task=detection", "model.name=detr", IQ_IC_GC, "teacher.name=llava", "teacher.store=s"]
    )
    assert stored.teacher.store == "s"
    with pytest.raises(ConfigError, match="teacher.source"):  # only COCO has masks
        load_config(None, ["task=detection", "model.name=detr", IQ_IC_GC, "teacher.name=oracle",
                           "teacher.source=masks", "data.dataset=voc"])  # fmt: skip
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(None, [*DET, "data.dataset=pacs"])
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(None, [*DET, "task=segmentation", "data.dataset=voc"])
    with pytest.raises(ConfigError, match="loss.kd_weight"):
        load_config(None, [*DET, "loss.kd_weight=1"])
    with pytest.raises(ConfigError, match="model.freeze_backbone"):
        load_config(None, [*DET, "model.freeze_backbone=true"])
    with pytest.raises(ConfigError, match="model.size"):
        load_config(None, [*DET, "model.size=r101"])
    with pytest.raises(ConfigError, match="loss.rows"):
        load_config(None, [*DET, "loss.rows=some"])
    with pytest.raises(ConfigError, match="model.num_queries"):
        load_config(None, [*DET, "model.num_queries=0"])


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
    from lfi.train.build import build_model

    cfg = load_config(None, [*DET, "model.size=tiny", f"model.backbone_norm={norm}"])
    backbone = build_model(cfg, 3).core.backbone
    frozen_norms = [m for m in backbone.modules() if type(m).__name__.endswith("FrozenBatchNorm2d")]
    group_norms = [m for m in backbone.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert (not frozen_norms and len(group_norms) > 0) == scratch
    assert all(p.requires_grad for p in backbone.parameters()) == scratch
    with pytest.raises(ConfigError, match="model.backbone_norm"):
        load_config(None, [*DET, "model.backbone_norm=layer"])


def test_float_fields_accept_exponent_notation():
    cfg = load_config(None, [*DET, "optim.lr=1e-3", "optim.weight_decay=0", "loss.align_weight=2"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.weight_decay, float) and cfg.loss.align_weight == 2.0
    with pytest.raises(ConfigError, match="'optim.lr' must be float"):
        load_config(None, [*DET, "optim.lr=fast"])
