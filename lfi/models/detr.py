"""Build the Hugging Face DETR models that I-DETR converts: random init, no download (paper Sec. 5.3)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from lfi.models.idetr import detr_core


def build_detr(
    task: str, arch: str, num_labels: int, size: str = "r50", num_queries: int = 100, dropout: float = 0.1
) -> nn.Module:
    """A randomly initialised HF DETR (no download): DETR-R50 as published, or a tiny one for tests.

    task: "detection" or "segmentation" (DETR only); arch: "detr" or "conditional_detr"; size: "r50" or
    "tiny". Auxiliary decoding losses are on, as in DETR's recipe (HF's config has them off by default).
    """
    from transformers import (
        ConditionalDetrConfig,
        ConditionalDetrForObjectDetection,
        DetrConfig,
        DetrForObjectDetection,
        DetrForSegmentation,
        ResNetConfig,
    )

    if task not in ("detection", "segmentation"):
        raise ValueError(f"task: expected 'detection' or 'segmentation', got {task!r}")
    if arch not in ("detr", "conditional_detr"):
        raise ValueError(f"arch: expected 'detr' or 'conditional_detr', got {arch!r}")
    if size not in ("r50", "tiny"):
        raise ValueError(f"size: expected 'r50' or 'tiny', got {size!r}")
    if task == "segmentation" and arch != "detr":
        raise ValueError(f"task 'segmentation' is built for arch 'detr' only, got {arch!r}")
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
    """In place: HF's frozen BatchNorm layers of the CNN backbone -> GroupNorm, every backbone weight trainable.

    Why: HF freezes the backbone's BatchNorm statistics, as fits a pretrained ResNet; a randomly initialised
    backbone trained from scratch needs normalisation that learns (the config's model.backbone_norm).
    """
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
