"""`build(cfg)`: the student, its criterion, its data and its task (forward + evaluator), for any task.

    built = build(load_config("configs/table1/ivit_s.yaml"))
    built.model, built.criterion, built.datamodule, built.task

Where each config value goes is visible here: `loss.*` -> `Criterion.weight_dict`, `model.*` -> the I-ViT /
I-DETR conversion, `teacher.*` -> where the maps come from, `data.*` -> `LfiDataModule`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from lfi.config import Config, ConfigError, check_patch_multiple
from lfi.data.controls import with_control
from lfi.train.data import ExperimentData, LfiDataModule, Transform, build_data, check_store_covers
from lfi.train.losses import Criterion, classification_criterion, detection_criterion
from lfi.train.tasks import ClassificationTask, DetectionTask, oracle_maps, stored_maps


@dataclass
class Built:
    """What a config builds: model (an InteractionViT / InteractionDETR), criterion (with its weight_dict),
    datamodule (train / val loaders, test_loaders()), task (forward + evaluator), data (the datasets)."""

    model: nn.Module
    criterion: Criterion
    datamodule: LfiDataModule
    task: ClassificationTask | DetectionTask
    data: ExperimentData


def build_classifier(cfg: Config, num_classes: int) -> nn.Module:
    """The timm ViT of cfg.model, built for cfg.data.img_size, converted by the Table 3 row `model.variant`."""
    from lfi.models import TABLE3, InteractionViT, create_vit

    m = cfg.model
    kwargs = {**m.timm_kwargs, "img_size": cfg.data.img_size}
    if m.timm_kwargs.get("img_size", cfg.data.img_size) != cfg.data.img_size:
        raise ConfigError(
            f"model.timm_kwargs.img_size={m.timm_kwargs['img_size']} differs from data.img_size="
            f"{cfg.data.img_size}: set data.img_size only (the model is built for it)"
        )
    try:
        vit = create_vit(m.name, m.checkpoint, num_classes=num_classes, **kwargs)
    except TypeError as error:  # a key the timm model's constructor does not take
        raise ConfigError(
            f"model.timm_kwargs {sorted(m.timm_kwargs)} do not fit timm model {m.name!r}: {error}"
        ) from None
    except RuntimeError as error:  # unknown model name
        raise ConfigError(f"model.name {m.name!r}: {error}") from None
    for patch in set(vit.patch_embed.patch_size):  # the name's 'patchN' may be overridden or absent
        check_patch_multiple(cfg.data.img_size, patch, f"model {m.name!r}")
    conversion = replace(
        TABLE3[m.variant],
        gate_hidden=m.gate_hidden,
        layers=tuple(m.layers) if m.layers is not None else None,
        align_layers=tuple(m.align_layers) if m.align_layers is not None else None,
        freeze_backbone=m.freeze_backbone,
        cuda_graphs=m.cuda_graphs,
    )
    return InteractionViT(vit, conversion)


def build_detector(cfg: Config, num_labels: int) -> nn.Module:
    """The HF DETR of cfg.model (random init, or cfg.model.checkpoint), converted to I-DETR by `variant`."""
    from safetensors.torch import load_file

    from lfi.models import TABLE3
    from lfi.models.detr import build_detr, trainable_backbone
    from lfi.models.idetr import IDETRConfig, interactionize_detr

    m = cfg.model
    detr = build_detr(cfg.task, m.name, num_labels, m.size, m.num_queries, m.dropout)
    if m.checkpoint:
        detr.load_state_dict(load_file(m.checkpoint), strict=True)
    if m.backbone_norm == "group_norm" or (m.backbone_norm == "auto" and not m.checkpoint):
        trainable_backbone(detr)
    switches = TABLE3[m.variant]
    config = IDETRConfig(
        interaction_queries=switches.interaction_queries,
        gated_control=switches.gated_control,
        constraint=switches.constraint,
        gate_hidden=m.gate_hidden,
        layers=tuple(m.layers) if m.layers is not None else None,
        align_layers=tuple(m.align_layers) if m.align_layers is not None else None,
        freeze_backbone=m.freeze_backbone,
    )
    return interactionize_detr(detr, config, inplace=True)


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The student of cfg.task with `num_classes` classes (detection: labels without the no-object class)."""
    if cfg.task == "classification":
        return build_classifier(cfg, num_classes)
    return build_detector(cfg, num_classes)


def build_kd_teacher(cfg: Config, data: ExperimentData) -> nn.Module:
    from lfi.train.distill import LogitTeacher, imagenet_indices

    kd = cfg.loss.kd
    if not data.wnids:
        raise ConfigError(
            "loss.kd_weight > 0 needs the dataset's class wnids (ImageNet classes), e.g. TinyImageNet"
        )
    for key in ("checkpoint", "synsets"):
        if getattr(kd, key) is None:
            raise ConfigError(f"loss.kd.{key} must name a file for the KD baseline (loss.kd_weight > 0)")
    return LogitTeacher(kd.model, kd.checkpoint, imagenet_indices(data.wnids, kd.synsets), kd.input_size)


def build_criterion(cfg: Config, model: nn.Module, data: ExperimentData) -> Criterion:
    """Every loss term of cfg.task with its weight from cfg.loss, in one weight_dict."""
    loss = cfg.loss
    if cfg.task == "classification":
        return classification_criterion(
            align_weight=loss.align_weight,
            direction=loss.direction,
            label_smoothing=loss.label_smoothing,
            kd_teacher=build_kd_teacher(cfg, data) if loss.kd_weight > 0 else None,
            kd_weight=loss.kd_weight,
            kd_temperature=loss.kd.temperature,
            aligned=cfg.aligned,
        )
    maps = None
    if cfg.aligned:  # the store's maps, or the oracle's on the fly from each transformed image's ground truth
        oracle = functools.partial(_oracle_batch_maps, source=cfg.teacher.source)
        maps = stored_maps if cfg.teacher.store is not None else oracle
    return detection_criterion(
        model.detr.config,
        masks=cfg.task == "segmentation",
        aux_weight=loss.aux_weight,
        teacher_maps=maps,
        rows=loss.rows,
        direction=loss.direction,
        align_weight=loss.align_weight,
    )


def _oracle_batch_maps(batch: dict, source: str) -> tuple[list, None]:
    return oracle_maps(batch["targets"], source), None  # each over exactly its transformed image


def open_store(cfg: Config) -> Any:
    """The interaction store of cfg.teacher, checked to come from that teacher."""
    from lfi.store.shards import InteractionStore

    return InteractionStore(cfg.teacher.store, expect={"teacher": cfg.teacher.name})


def build_task(cfg: Config, data: ExperimentData) -> ClassificationTask | DetectionTask:
    if cfg.task == "classification":
        return ClassificationTask()
    from lfi.models.detr import build_processor

    return DetectionTask(
        build_processor(cfg.model.name), data.coco_gt, data.category_ids, cfg.task == "segmentation"
    )


def build(
    cfg: Config,
    data: ExperimentData | None = None,
    store: Any | None = None,
    train_transforms: Transform | None = None,
    eval_transforms: Transform | None = None,
) -> Built:
    """Everything cfg describes. data / store default to cfg.data's datasets and cfg.teacher.store (`lfi demo`
    and tests pass their own)."""
    data = data or build_data(cfg)
    model = build_model(cfg, len(data.classes))
    # the oracle of a detector without a store computes its maps on the fly from each batch's ground truth
    reads_store = cfg.aligned and (store is not None or cfg.teacher.store is not None)
    if reads_store and store is None:
        store = open_store(cfg)
        check_store_covers(store, data.train, cfg.teacher.store)
    if reads_store:
        store = with_control(store, cfg.teacher.control, cfg.seed)
    grid = None
    if cfg.task == "classification":
        img = cfg.data.img_size
        grid = model.patch_grid((img, img))
    datamodule = LfiDataModule(
        cfg, data, grid, store if reads_store else None, train_transforms, eval_transforms
    )
    return Built(model, build_criterion(cfg, model, data), datamodule, build_task(cfg, data), data)
