"""Train and evaluate I-DETR (DETR / Conditional DETR, detection or segmentation) with dense alignment.

    cfg = load_detection_config("configs/detection/coco_det_cvlm.yaml", ["optim.epochs=1"])
    metrics = train_detection(cfg)

L_total = L_DETR (HF's Hungarian-matched loss from `labels`) + align.weight * L_align (`DenseAlignment`,
paper Eq. 13-14). A plain loop (AdamW, DETR's lr split between backbone and transformer, gradient clipping):
DETR's recipe has no scheduler subtleties that a framework would add. Evaluation: pycocotools COCOeval
through `lfi.evaluate.coco`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from lfi.data.collate import collate_detection
from lfi.data.pipelines import detection_transforms
from lfi.evaluate.coco import CocoEvaluator, coco_from_dataset, detr_predictions
from lfi.models.idetr import IDETRConfig, InteractionDETR, detr_core, interactionize_detr
from lfi.train.config import build_dataclass, read_config
from lfi.train.detection_align import DenseAlignment
from lfi.train.detection_data import (
    WithOriginalSize,
    coco_ground_truth,
    detr_labels,
    fraction_subset,
    oracle_maps,
    stored_maps,
)
from lfi.train.losses import AlignmentLoss

ARCHS = ("detr", "conditional_detr")
TASKS = ("detection", "segmentation")
SIZES = ("tiny", "r50")
TEACHERS = ("none", "oracle", "store")
BACKBONE_NORMS = ("auto", "frozen_bn", "group_norm")


@dataclass
class DataConfig:
    """dataset: 'coco' (COCO json layout), 'voc' (Pascal VOC XML) or 'tinyimagenet' (one box per image).
    fraction: share of the training images kept (seeded), the low-data setting of Table 7.
    scales / max_size: DETR's multi-scale resize (shorter side in scales, longer at most max_size)."""

    dataset: str = "coco"
    root: str = "../shared/data"
    train_split: str = "train"
    val_split: str = "val"
    fraction: float = 1.0
    seed: int = 0
    scales: list[int] = field(default_factory=lambda: [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    year: str = "2007"


@dataclass
class DetrModelConfig:
    """size: 'r50' (DETR-R50 / Conditional-DETR-R50 as published) or 'tiny' (tests, CPU);
    checkpoint: local safetensors of the HF model (plain, before conversion), None = random init.
    dropout: the transformer's dropout (DETR: 0.1; 0 for overfitting tests).
    backbone_norm: 'frozen_bn' keeps HF/DETR's frozen BatchNorm and frozen stem + first stage, right for a
        pretrained backbone; 'group_norm' makes the whole backbone trainable with GroupNorm, for training from
        scratch (Table 7): frozen BatchNorm over random weights normalises nothing and a frozen random stem
        never learns; GroupNorm's per-image statistics hold at DETR's 2-4 images per device (He et al.,
        "Rethinking ImageNet Pre-training"). 'auto': 'frozen_bn' with a checkpoint, else 'group_norm'.
    The remaining fields are `IDETRConfig`'s."""

    size: str = "r50"
    num_queries: int = 100
    dropout: float = 0.1
    checkpoint: str | None = None
    backbone_norm: str = "auto"
    layers: list[int] | None = None
    interaction_queries: bool = True
    gated_control: bool = True
    constraint: str = "interaction"
    align_layers: list[int] | None = None
    freeze_original: bool = False
    gate_hidden: int = 8


@dataclass
class DetTeacherConfig:
    """Where C_VLM comes from. name: 'none' (no alignment), 'oracle' (ground truth boxes/masks computed on
    the fly: an upper-bound reference, not a VLM), or 'store' (an interaction store from `lfi extract`, e.g.
    LLaVA with boxes as visual prompts). teacher: the extracting teacher's name, recorded for the tables."""

    name: str = "none"
    source: str = "boxes"
    store: str | None = None
    teacher: str = ""


@dataclass
class AlignConfig:
    weight: float = 1.0
    rows: str = "all"
    direction: str = "teacher_student"


@dataclass
class OptimConfig:
    """DETR's optimiser: AdamW, lr / lr_backbone, gradient clipping; lr x 0.1 every lr_drop epochs (None:
    constant); max_steps stops early (smoke runs)."""

    epochs: int = 50
    batch_size: int = 2
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    clip: float = 0.1
    lr_drop: int | None = None
    num_workers: int = 2
    max_steps: int | None = None


@dataclass
class DetectionConfig:
    """One row of Table 6 / Table 7: task, architecture, data, model conversion, teacher, alignment."""

    task: str = "detection"
    arch: str = "detr"
    data: DataConfig = field(default_factory=DataConfig)
    model: DetrModelConfig = field(default_factory=DetrModelConfig)
    teacher: DetTeacherConfig = field(default_factory=DetTeacherConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: str = "runs/detection"
    device: str = "auto"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("task", self.task, TASKS), ("arch", self.arch, ARCHS), ("model.size", self.model.size, SIZES),
            ("teacher.name", self.teacher.name, TEACHERS), ("teacher.source", self.teacher.source, ("boxes", "masks")),
            ("model.backbone_norm", self.model.backbone_norm, BACKBONE_NORMS),
        ):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{key}: expected one of {allowed}, got {value!r}")
        if self.task == "segmentation" and self.arch != "detr":
            raise ValueError("task 'segmentation' needs arch 'detr' (HF has DetrForSegmentation only)")
        if self.teacher.name == "store" and not self.teacher.store:
            raise ValueError("teacher.store: a store folder is needed with teacher.name 'store'")
        if self.teacher.name != "none" and self.model.constraint == "none":
            raise ValueError("teacher given but model.constraint is 'none': nothing would be aligned")
        if self.teacher.name == "none" and self.model.constraint != "none":
            raise ValueError(
                "model.constraint needs a teacher (teacher.name 'oracle' or 'store'), or set 'none'"
            )


def load_detection_config(path: str | Path | None, overrides: list[str] = ()) -> DetectionConfig:
    """YAML file (its `base:` chain too, or defaults) + dotted overrides 'optim.epochs=1' -> DetectionConfig;
    keys and types are checked as for `lfi train` configs (`lfi.train.config`)."""
    return build_dataclass(DetectionConfig, *read_config(path, overrides))


def build_detr(
    task: str, arch: str, num_labels: int, size: str = "r50", num_queries: int = 100, dropout: float = 0.1
) -> nn.Module:
    """A randomly initialised HF DETR (no download): DETR-R50 as published, or a tiny one for tests.
    Auxiliary decoding losses are on, as in DETR's recipe (HF's config has them off by default)."""
    from transformers import (
        ConditionalDetrConfig,
        ConditionalDetrForObjectDetection,
        DetrConfig,
        DetrForObjectDetection,
        DetrForSegmentation,
        ResNetConfig,
    )

    stages = ["stage1", "stage2", "stage3", "stage4"]  # the mask head reads all four
    if size == "tiny":
        backbone = ResNetConfig(
            embedding_size=16,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=stages,
        )
        dims = dict(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=8,
            decoder_attention_heads=8,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
        )
    else:
        backbone, dims = ResNetConfig(out_features=stages), {}
    config_cls = ConditionalDetrConfig if arch == "conditional_detr" else DetrConfig
    config = config_cls(use_timm_backbone=False, backbone_config=backbone, num_labels=num_labels,
                        num_queries=num_queries, dropout=dropout, auxiliary_loss=True, **dims)  # fmt: skip
    if arch == "conditional_detr":
        return ConditionalDetrForObjectDetection(config)
    return DetrForSegmentation(config) if task == "segmentation" else DetrForObjectDetection(config)


def trainable_backbone(detr: nn.Module) -> None:
    """In place: HF's frozen BatchNorm layers of the CNN backbone -> GroupNorm, every backbone weight trainable
    (see DetrModelConfig.backbone_norm)."""
    backbone = detr_core(detr).backbone
    for module in list(backbone.modules()):
        for name, child in module.named_children():
            if type(child).__name__.endswith("FrozenBatchNorm2d"):
                channels = child.weight.numel()
                setattr(module, name, nn.GroupNorm(math.gcd(32, channels), channels))
    backbone.requires_grad_(True)


def build_processor(arch: str) -> Any:
    """The HF image processor whose post-processing matches the architecture's loss (softmax vs sigmoid)."""
    from transformers import ConditionalDetrImageProcessor, DetrImageProcessor

    return ConditionalDetrImageProcessor() if arch == "conditional_detr" else DetrImageProcessor()


def build_model(cfg: DetectionConfig, num_labels: int) -> InteractionDETR:
    detr = build_detr(
        cfg.task, cfg.arch, num_labels, cfg.model.size, cfg.model.num_queries, cfg.model.dropout
    )
    if cfg.model.checkpoint:
        detr.load_state_dict(load_file(cfg.model.checkpoint), strict=True)
    m = cfg.model
    if m.backbone_norm == "group_norm" or (m.backbone_norm == "auto" and not m.checkpoint):
        trainable_backbone(detr)
    config = IDETRConfig(
        layers=tuple(m.layers) if m.layers is not None else None, interaction_queries=m.interaction_queries,
        gated_control=m.gated_control, constraint=m.constraint,
        align_layers=tuple(m.align_layers) if m.align_layers is not None else None,
        freeze_original=m.freeze_original, gate_hidden=m.gate_hidden,
    )  # fmt: skip
    return interactionize_detr(detr, config, inplace=True)


def build_datasets(cfg: DetectionConfig) -> tuple[Any, Any, Any, list[int] | None]:
    """(train dataset, val dataset, COCO ground truth of val, COCO category id per label or None)."""
    d, masks = cfg.data, cfg.task == "segmentation" or cfg.teacher.source == "masks"
    if d.dataset == "coco":
        from lfi.data.coco import CocoDetection

        train, val = (CocoDetection(d.root, s, return_masks=masks) for s in (d.train_split, d.val_split))
        return train, val, val.coco, val.coco_ids
    if masks:
        raise ValueError(f"data.dataset {d.dataset!r} has no instance masks (segmentation / mask oracle)")
    if d.dataset == "voc":
        from lfi.data.voc import VOCDetection

        train, val = (VOCDetection(d.root, s, d.year) for s in (d.train_split, d.val_split))
    elif d.dataset == "tinyimagenet":
        from lfi.data.tinyimagenet import TinyImageNet

        train, val = (TinyImageNet(d.root, s) for s in (d.train_split, d.val_split))
    else:
        raise ValueError(f"data.dataset: expected 'coco', 'voc' or 'tinyimagenet', got {d.dataset!r}")
    return train, val, coco_from_dataset(coco_ground_truth(val, val.classes)), None


def loader(dataset: Any, cfg: DetectionConfig, train: bool, store: Any = None) -> DataLoader:
    transforms = detection_transforms(train, scales=cfg.data.scales, max_size=cfg.data.max_size)
    if store is not None:
        from lfi.data.interaction import WithInteractionMaps

        data = WithInteractionMaps(WithOriginalSize(dataset), store, transforms, grid=STORE_STRIDE)
    else:
        data = WithOriginalSize(dataset, transforms)
    return DataLoader(
        data,
        batch_size=cfg.optim.batch_size,
        shuffle=train,
        collate_fn=collate_detection,
        num_workers=cfg.optim.num_workers,
        generator=torch.Generator().manual_seed(cfg.data.seed),
    )


#: Grid of stored maps after the transforms: image // 32, the encoder's stride for ResNet backbones.
STORE_STRIDE = 32


class DetectionTask(nn.Module):
    """One training step's losses: {"task", "align" (with a teacher), "loss"} (weighted total, Eq. 13)."""

    def __init__(self, model: InteractionDETR, cfg: DetectionConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        aligned = cfg.teacher.name != "none"
        self.alignment = (
            DenseAlignment(cfg.align.rows, AlignmentLoss(cfg.align.direction)) if aligned else None
        )

    def teacher_maps(self, batch: dict) -> list[torch.Tensor]:
        if self.cfg.teacher.name == "oracle":
            return oracle_maps(batch["targets"], self.cfg.teacher.source)
        return stored_maps(batch, STORE_STRIDE)

    def forward(self, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        pixels = batch["image"].to(device)
        labels = [
            {k: v.to(device) for k, v in t.items()} for t in detr_labels(batch["targets"], pixels.shape[-2:])
        ]
        inputs = {
            "pixel_values": pixels,
            "pixel_mask": batch["pixel_mask"].long().to(device),
            "labels": labels,
        }
        if self.alignment is None:
            loss = self.model(**inputs).loss
            return {"task": loss, "loss": loss}
        out = self.model.forward_aligned(**inputs)
        name = self.model.config.supervised_map
        maps = {i: m[name] for i, m in out.maps.items()}
        align = self.alignment(maps, out.grid_mask, self.teacher_maps(batch))
        return {
            "task": out.outputs.loss,
            "align": align,
            "loss": out.outputs.loss + self.cfg.align.weight * align,
        }


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def param_groups(model: InteractionDETR, cfg: OptimConfig) -> list[dict]:
    """DETR's two learning rates: lr_backbone for the CNN backbone, lr for everything else."""
    backbone = {id(p) for p in model.core.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if id(p) not in backbone], "lr": cfg.lr},
        {"params": [p for p in trainable if id(p) in backbone], "lr": cfg.lr_backbone},
    ]


@torch.no_grad()
def evaluate_detection(
    model: InteractionDETR,
    data: DataLoader,
    gt: Any,
    processor: Any,
    category_ids: list[int] | None,
    masks: bool,
    device: torch.device,
) -> dict[str, float]:
    """COCOeval metrics (mAP, AP50, AP75, AP_S/M/L, and AP_mask... with masks) of `model` over `data`."""
    model.eval()
    evaluator = CocoEvaluator(gt, ("bbox", "segm") if masks else ("bbox",))
    for batch in data:
        pixels = batch["image"].to(device)
        outputs = model(pixel_values=pixels, pixel_mask=batch["pixel_mask"].long().to(device))
        ids = [int(t["image_id"]) for t in batch["targets"]]
        preds = detr_predictions(
            outputs, processor, ids, [t["orig_size"] for t in batch["targets"]],
            input_sizes=[t["size"] for t in batch["targets"]], padded_size=tuple(pixels.shape[-2:]),
            category_ids=category_ids,
        )  # fmt: skip
        evaluator.update(preds, ids)
    return evaluator.compute()


def train_loop(
    task: DetectionTask, data: DataLoader, cfg: OptimConfig, device: torch.device, log: Any = print
) -> list[dict[str, float]]:
    """Runs `cfg.epochs` epochs (or `cfg.max_steps` steps); returns the per-step losses."""
    task.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(task.model, cfg), weight_decay=cfg.weight_decay)
    drop = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_drop) if cfg.lr_drop else None
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        for batch in data:
            losses = task(batch, device)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(task.model.parameters(), cfg.clip)
            optimizer.step()
            history.append({k: float(v.detach()) for k, v in losses.items()})
            if cfg.max_steps is not None and len(history) >= cfg.max_steps:
                return history
        if drop is not None:
            drop.step()
        log(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
    return history


def train_detection(cfg: DetectionConfig, log: Any = print) -> dict[str, float]:
    """Train on data.train_split, evaluate on data.val_split; writes weights, config and metrics to output."""
    torch.manual_seed(cfg.data.seed)
    device = _device(cfg.device)
    train, val, gt, category_ids = build_datasets(cfg)
    train = fraction_subset(train, cfg.data.fraction, cfg.data.seed)
    num_labels = len(category_ids) if category_ids is not None else len(val.classes)
    model = build_model(cfg, num_labels)
    store = None
    if cfg.teacher.name == "store":
        from lfi.extract.store import InteractionStore

        store = InteractionStore(cfg.teacher.store)
    start = time.time()
    history = train_loop(DetectionTask(model, cfg), loader(train, cfg, True, store), cfg.optim, device, log)
    metrics = evaluate_detection(model, loader(val, cfg, False), gt, build_processor(cfg.arch), category_ids,
                                 cfg.task == "segmentation", device)  # fmt: skip
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    summary = {"metrics": metrics, "train_seconds": time.time() - start, "steps": len(history),
               "final_losses": history[-1] if history else {}}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    log(json.dumps(metrics))
    return metrics


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = load_detection_config(args.config, args.set)
    train_detection(cfg)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    cfg = load_detection_config(args.config, args.set)
    device = _device(cfg.device)
    _, val, gt, category_ids = build_datasets(cfg)
    num_labels = len(category_ids) if category_ids is not None else len(val.classes)
    model = build_model(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=None)), num_labels
    )
    model.load_state_dict(load_file(args.weights), strict=True)
    metrics = evaluate_detection(model.to(device), loader(val, cfg, False), gt, build_processor(cfg.arch),
                                 category_ids, cfg.task == "segmentation", device)  # fmt: skip
    print(json.dumps(metrics, indent=2))
    return 0


def register(subparsers: Any) -> None:
    """`lfi train-det CONFIG [--set k=v ...]` and `lfi eval-det CONFIG WEIGHTS [--set k=v ...]`."""
    p = subparsers.add_parser("train-det", help="train I-DETR / DETR (detection, segmentation) from a config")
    p.add_argument("config", help="YAML under configs/detection/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    p.set_defaults(func=_cmd_train)
    p = subparsers.add_parser("eval-det", help="COCO metrics of trained I-DETR weights (pycocotools)")
    p.add_argument("config")
    p.add_argument("weights", help="model.safetensors written by train-det")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    p.set_defaults(func=_cmd_eval)
