"""Experiment configuration: one schema for every task, loaded from YAML with dotted overrides.

    cfg = load_config("configs/table1/ivit_s.yaml", ["trainer.max_epochs=3", "data.img_size=64"])

A config names its `task` ('classification': a timm ViT / I-ViT; 'detection' or 'segmentation': an HF DETR /
I-DETR predicting boxes, or boxes and instance masks) and one spelling per concept whatever the task: `model.variant` (a row of the paper's Table 3),
`model.layers`, `model.align_layers`, `model.freeze_backbone`, `loss.align_weight`, `loss.direction`,
`teacher.name` (the teacher that made the maps), `teacher.store`.

Every key is checked against the dataclasses below and every number against its range: an unknown key, a
value of the wrong type or out of range raises `ConfigError` naming the dotted key, what was expected and
the file or override it came from. Override values are YAML scalars (``3`` -> int, ``1e-3`` -> float,
``null`` -> None, ``[0, 1]`` -> list). This module imports no torch: every command can read configs fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Union

import yaml

from lfi.catalog import dataset_names, dataset_spec, teacher_names, teacher_spec
from lfi.files import atomic_write

TASKS = ("classification", "detection", "segmentation")
#: The rows of the paper's Table 3 (`lfi.models.TABLE3`): 'vit' is the unconverted model.
VARIANTS = ("vit", "iq_gc", "ic_original", "iq_ic", "iq_ic_gc")
#: Controls of an aligned run (`lfi.data.controls`): the teacher's maps, or maps that carry no knowledge.
CONTROLS = ("none", "centre", "uniform", "shuffled")
DETR_ARCHS = ("detr", "conditional_detr")
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed")


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the dotted key."""


@dataclass
class TeacherConfig:
    """The teacher whose interaction maps (C_VLM) supervise the student.

    name: 'llava' (the paper's VLM, LLaVA-1.5), 'hf' (any supported Hugging Face VLM family, e.g. LLaVA-NeXT,
        Qwen2-VL: `lfi.extract.vlm.families`), or an offline substitute: 'vit' (DeiT-Tiny relevance, a
        VFM->VFM teacher) or 'oracle' (ground-truth boxes or masks); 'none' when no maps are read.
    store: folder of the interaction store written by `lfi extract`. Detection with the oracle may leave it
        None: the oracle's maps are then computed on the fly from each transformed image's ground truth.
    source: the oracle's ground truth, 'boxes' or 'masks' (detection, on the fly).
    control: 'none' (the teacher's maps), or a control that keeps the run but not the maps' knowledge:
        'centre' (one centred Gaussian for every image), 'uniform', 'shuffled' (each image gets another
        image's map from the store); see `lfi.data.controls`. Needs the store (its keys and grid).
    """

    name: str = "none"
    store: str | None = None
    source: str = "boxes"
    control: str = "none"


@dataclass
class ModelConfig:
    """The student.

    name: classification: a timm ViT name; detection: 'detr' or 'conditional_detr' (HF transformers).
    checkpoint: local weights (safetensors preferred), None = random init.
    timm_kwargs: extra timm.create_model arguments (patch_size, depth, ...); the input size comes from
        data.img_size and num_classes from the data.
    size: detection only, 'r50' (DETR-R50 as published) or 'tiny' (tests, CPU); num_queries, dropout and
        backbone_norm ('auto', 'frozen_bn', 'group_norm') likewise.
    variant: a row of the paper's Table 3: 'vit' (plain), 'iq_gc' (interaction queries + gate, no
        constraint), 'ic_original' (C_VLM supervises the original queries), 'iq_ic', 'iq_ic_gc' (I-ViT).
    freeze_backbone: train only P'_q, the gates and the task head (paper 5.1.2; needs a checkpoint).
    layers: blocks (encoder layers) to convert; None = all. align_layers: converted layers the loss reads;
        None = the deeper half of them. gate_hidden: width of the gate's FFN; 0 = the per-pair linear gate
        (no hidden layer; it has no fused kernel, so it runs on the reference attention path).
    cuda_graphs: classification: replay a fully frozen, deterministic trunk (the linear probe's) from CUDA
        graphs on the GPU (`lfi.models.graphs`; same values, less host time); false keeps it eager.
    """

    name: str = "vit_small_patch16_224"
    checkpoint: str | None = None
    timm_kwargs: dict = field(default_factory=dict)
    size: str = "r50"
    num_queries: int = 100
    dropout: float = 0.1
    backbone_norm: str = "auto"
    variant: str = "vit"
    freeze_backbone: bool = False
    layers: list[int] | None = None
    align_layers: list[int] | None = None
    gate_hidden: int = 8
    cuda_graphs: bool = True


@dataclass
class KDConfig:
    """Result-oriented knowledge distillation (Hinton et al. 2015) from an ImageNet classifier's logits.

    The teacher is a timm model (the offline 'vit' teacher, DeiT-Tiny); the dataset's classes are mapped to
    their ImageNet indices by wnid through `synsets`. Its weight is `loss.kd_weight`.
    """

    temperature: float = 4.0
    model: str = "deit_tiny_patch16_224"
    checkpoint: str | None = None
    synsets: str | None = None
    input_size: int = 224


@dataclass
class LossConfig:
    """The weights of Eq. 13 and its extensions, gathered in the criterion's `weight_dict`:
    L = L_task + aux_weight * L_aux (DETR's decoder-layer losses) + align_weight * L_align (Eq. 14)
        + kd_weight * L_kd (the KD baseline).

    direction: 'teacher_student' (KL(C_VLM || student), default) or 'student_teacher' (Eq. 14 as printed,
        with teacher smoothing). rows: detection, which query rows are aligned ('all' or 'objects').
    """

    align_weight: float = 1.0
    aux_weight: float = 1.0
    kd_weight: float = 0.0
    direction: str = "teacher_student"
    label_smoothing: float = 0.0
    rows: str = "all"
    kd: KDConfig = field(default_factory=KDConfig)


@dataclass
class DataConfig:
    """Datasets and loading.

    root: the data folder (e.g. ../shared/data). ratio: the share of training images kept (seeded; per
    class for classification), Table 2 / Table 7. train_domains / test_domains: PACS / VLCS domains.
    val_fraction: a stratified share of the training images held out as the validation split (the best
    epoch and any tuning are chosen on it; the dataset's own validation set then becomes a test set).
    gpu_pipeline: classification on a GPU: images decoded once into a uint8 cache (cache_dir, default
    $LFI_CACHE or ~/.cache/lfi), kept on the device with the maps and augmented per batch there
    (`lfi.data.gpu`); None = on whenever the run is on a GPU.
    img_size: classification input side (the model is built for it; detection refuses it). scales / max_size:
    detection's multi-scale resize (shorter side in scales, longer at most max_size). train_split / val_split: detection
    splits; year: VOC.
    Your own data (paths relative to the working directory; folders or zips): dataset 'imagefolder' reads
    train_dir (one sub-folder of images per class), val_dir (or val_fraction > 0 alone) and test_dirs {name:
    folder} (e.g. one per unseen domain), see `lfi.data.imagefolder`; dataset 'coco' reads any COCO-format set
    from train_json / val_json, its images from train_dir / val_dir (default: found beside each json).
    classes_subset / shortcut / shortcut_width: TinyImageNet's shortcut test (`lfi.data.shortcut`, issue 18):
    classes_subset n keeps n evenly spaced classes (train, val and test alike; None = all); shortcut p paints
    a band of a class's colour outside each object's box, the image's own class's on a share p of the
    training (and "id" test) images, another class's on the rest; test sets "id", "ood" (cue independent of
    the class) and "clean" (no cue); None = no cue; needs classes_subset <= 20 (one colour per class).
    shortcut_width: the band's thickness, a share of the image side (0.1875: 12 px of 64).
    skip_failed: leave out of training (and of a validation split held out of it) the images listed in
    teacher.store's failed.jsonl (those `lfi extract --on-error skip` could not read), matched by their
    dataset-relative path; false: such an image stops training with one line naming it.
    """

    dataset: str = "tinyimagenet"
    root: str = "../shared/data"
    img_size: int = 224
    ratio: float = 1.0
    train_domains: list[str] | None = None
    test_domains: list[str] | None = None
    train_split: str = "train"
    val_split: str = "val"
    scales: list[int] = field(default_factory=lambda: [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    year: str = "2007"
    augment: bool = True
    batch_size: int = 64
    num_workers: int = 4
    split_seed: int = 0
    test_limit: int | None = None
    val_fraction: float = 0.0
    gpu_pipeline: bool | None = None
    cache_dir: str | None = None
    train_dir: str | None = None
    val_dir: str | None = None
    test_dirs: dict[str, str] | None = None
    train_json: str | None = None
    val_json: str | None = None
    classes_subset: int | None = None
    shortcut: float | None = None
    shortcut_width: float = 0.1875
    skip_failed: bool = False


@dataclass
class OptimConfig:
    """AdamW over parameter groups with their own learning rates: lr (the task head, and every group left
    None), lr_interaction (what the conversion added: P'_q and the gates), lr_backbone (the pretrained
    backbone when it trains, e.g. DETR's CNN). schedule 'cosine': linear warm-up over warmup_epochs, then
    cosine to min_lr_ratio x each group's lr, per optimizer step; 'step': x 0.1 every lr_drop epochs (DETR)."""

    lr: float = 5e-4
    lr_interaction: float | None = None
    lr_backbone: float | None = None
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    lr_drop: int | None = None


@dataclass
class TrainerConfig:
    """Arguments of lightning.Trainer (the subset lfi uses) and checkpointing.

    check_val_every_n_epoch: validate every N epochs; the final epoch is always validated.
    sanity_val_steps: validation batches run before training as a check (Lightning's; 0 skips it).
    checkpoint_every_n_epochs: write checkpoints/last.ckpt (full state, for --resume) every N epochs and after
    the final one; each write copies the state to shared host memory (a writer process writes the file), so runs
    of many short epochs may take N > 1 (a stopped run then redoes up to N - 1 epochs). checkpoint_every_n_steps: also write it every N optimizer steps (None:
    per epoch only). log_maps_every_n_epochs: TensorBoard figures of the interaction maps; 0 turns them off.
    """

    max_epochs: int = 50
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: bool = False
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    sanity_val_steps: int = 2
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    enable_progress_bar: bool = True
    checkpoint_every_n_epochs: int = 1
    checkpoint_every_n_steps: int | None = None
    log_maps_every_n_epochs: int = 1


@dataclass
class Config:
    """One experiment. Its run folder is output_dir/experiment (see `lfi.train.runs`).

    output_dir stays under the working directory or $LFI_RUNS_ROOT (`check_run_folder`), so that a typo or a
    borrowed config never writes elsewhere; output_dir_allow_outside: true lifts that for this config.
    """

    task: str = "classification"
    experiment: str = "run"
    paper_row: str = ""
    seed: int = 0
    output_dir: str = "runs"
    output_dir_allow_outside: bool = False
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.experiment

    @property
    def aligned(self) -> bool:
        """Whether the student is supervised by the teacher's maps (its variant has a constraint)."""
        return self.model.variant in ("ic_original", "iq_ic", "iq_ic_gc")


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    return isinstance(value, origin or hint)


def _build(cls: type, data: dict, prefix: str, origin: str) -> Any:
    """Instantiate dataclass `cls` from a dict, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{origin}: unknown key '{dotted}'; expected one of {sorted(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{dotted}.", origin)
        elif isinstance(value, str) and _accepts_float(hint) and _is_number(value):
            kwargs[key] = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        elif not _type_ok(value, hint):
            raise ConfigError(f"{origin}: '{dotted}' must be {_type_name(hint)}, got {value!r}")
        else:
            kwargs[key] = float(value) if hint is float else value
    return cls(**kwargs)


def _accepts_float(hint: Any) -> bool:
    return hint is float or float in typing.get_args(hint)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{k}' is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for nested sections."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: DataLoader workers: 4 per usable CPU (at least 8, the configs' value); thousands set off the OOM killer.
MAX_WORKERS = max(8, 4 * _usable_cpus())
_SEED_MAX = 2**32 - 1  # what numpy and Lightning accept as a seed
_BIG = 10**9  # counts of steps or batches: no run gets near it, a typo with extra digits does

#: Numeric ranges: dotted key -> (low, high, low inclusive, high inclusive). Every int and float field of the
#: schema has one (tests/train/test_config.py checks), with an upper bound far above any sane value, so that
#: a typo (lr=1e300, align_weight=1e308, num_workers=10000) is refused at load, not found mid-run.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "seed": (0, _SEED_MAX, True, True),
    "model.num_queries": (1, 10_000, True, True),
    "model.dropout": (0, 1, True, False),
    "model.gate_hidden": (0, 4096, True, True),
    "loss.align_weight": (0, 1000, True, True),
    "loss.aux_weight": (0, 1000, True, True),
    "loss.kd_weight": (0, 1000, True, True),
    "loss.label_smoothing": (0, 1, True, False),
    "loss.kd.temperature": (0, 100, False, True),
    "loss.kd.input_size": (1, 4096, True, True),
    "data.img_size": (1, 4096, True, True),
    "data.ratio": (0, 1, False, True),
    "data.max_size": (1, 8192, True, True),
    "data.batch_size": (1, 65_536, True, True),
    "data.num_workers": (0, MAX_WORKERS, True, True),
    "data.split_seed": (0, _SEED_MAX, True, True),
    "data.test_limit": (1, _BIG, True, True),
    "data.val_fraction": (0, 1, True, False),
    "data.classes_subset": (2, 100_000, True, True),
    "data.shortcut": (0, 1, True, True),
    "data.shortcut_width": (0, 0.5, False, True),
    "optim.lr": (0, 1, False, True),
    "optim.lr_backbone": (0, 1, True, True),
    "optim.lr_interaction": (0, 1, False, True),
    "optim.weight_decay": (0, 10, True, True),
    "optim.warmup_epochs": (0, 100_000, True, True),
    "optim.min_lr_ratio": (0, 1, True, True),
    "optim.lr_drop": (1, 100_000, True, True),
    "trainer.max_epochs": (1, 100_000, True, True),
    "trainer.max_steps": (-1, _BIG, True, True),
    "trainer.num_nodes": (1, 1024, True, True),
    "trainer.accumulate_grad_batches": (1, 4096, True, True),
    "trainer.gradient_clip_val": (0, 1e6, False, True),
    "trainer.log_every_n_steps": (1, _BIG, True, True),
    "trainer.check_val_every_n_epoch": (1, 100_000, True, True),
    "trainer.limit_train_batches": (0, _BIG, False, True),
    "trainer.limit_val_batches": (0, _BIG, True, True),
    "trainer.checkpoint_every_n_steps": (1, _BIG, True, True),
    "trainer.checkpoint_every_n_epochs": (1, 100_000, True, True),
    "trainer.sanity_val_steps": (0, 100_000, True, True),
    "trainer.log_maps_every_n_epochs": (0, 100_000, True, True),
}
MAX_SCALE = 8192  # data.scales, like data.max_size

#: Choices: dotted key -> allowed values (data.dataset and teacher.name come from `lfi.catalog` in `validate`).
CHOICES: dict[str, tuple[str, ...]] = {
    "task": TASKS,
    "teacher.source": ("boxes", "masks"),
    "teacher.control": CONTROLS,
    "model.variant": VARIANTS,
    "model.size": ("r50", "tiny"),
    "model.backbone_norm": ("auto", "frozen_bn", "group_norm"),
    "loss.direction": ("teacher_student", "student_teacher"),
    "loss.rows": ("all", "objects"),
    "optim.schedule": ("cosine", "step"),
    "trainer.precision": PRECISIONS,
}


def get_dotted(cfg: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


def _in_range(value: float, low: float, high: float, low_in: bool, high_in: bool) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


def _range_text(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def check_ranges(cfg: Config, origin: str) -> None:
    """Every numeric field in its range, every choice among its values (ConfigError names the key)."""
    for key, bounds in RANGES.items():
        value = get_dotted(cfg, key)
        if value is not None and not _in_range(value, *bounds):
            raise ConfigError(f"{origin}: '{key}' must be {_range_text(*bounds)}, got {value!r}")
    for key, allowed in CHOICES.items():
        value = get_dotted(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{origin}: '{key}' must be one of {allowed}, got {value!r}")
    betas = cfg.optim.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{origin}: 'optim.betas' must be two numbers in [0, 1), got {betas!r}")
    if not cfg.data.scales or not all(_in_range(v, 1, MAX_SCALE, True, True) for v in cfg.data.scales):
        raise ConfigError(
            f"{origin}: 'data.scales' must be a non-empty list of sizes in [1, {MAX_SCALE}], got {cfg.data.scales}"
        )


def output_roots() -> list[Path]:
    """Where run folders may be written: the working directory, and $LFI_RUNS_ROOT when it is set."""
    roots = [Path.cwd()]
    if os.environ.get("LFI_RUNS_ROOT"):
        roots.append(Path(os.path.abspath(os.environ["LFI_RUNS_ROOT"])))
    return roots


def patch_size_of(model: ModelConfig) -> int | None:
    """The classifier's patch side, from model.timm_kwargs.patch_size or a timm name's 'patchN' (None: unknown)."""
    size = model.timm_kwargs.get("patch_size")
    if size is None:
        found = re.search(r"patch(\d+)", model.name)
        size = int(found.group(1)) if found else None
    return size if isinstance(size, int) else None


def check_patch_multiple(img_size: int, patch: int, origin: str) -> None:
    """data.img_size must be a multiple of the patch: timm's patch embedding silently drops the remainder
    (e.g. 60 px with 16 px patches ignores 36% of each image and misaligns the teacher's maps)."""
    if img_size % patch:
        low, high = img_size // patch * patch, (img_size // patch + 1) * patch
        nearest = f"{low} or {high}" if low else str(high)
        raise ConfigError(
            f"{origin}: 'data.img_size'={img_size} is not a multiple of the model's patch size {patch}; "
            f"use {nearest}"
        )


def check_run_folder(cfg: Config, origin: str) -> None:
    """The run folder output_dir/experiment stays where it is meant to: experiment is a relative name below
    output_dir (no '..', not absolute, not '.'), and output_dir is under `output_roots()` unless
    output_dir_allow_outside. Paths are compared as written (normalised, symlinks not followed), so a
    `runs` link to another disk is fine."""
    parts = PurePath(cfg.experiment).parts
    if not parts or PurePath(cfg.experiment).is_absolute() or ".." in parts:
        raise ConfigError(
            f"{origin}: 'experiment' must be a relative name inside output_dir (no '..', not absolute, not '.'), "
            f"got {cfg.experiment!r}"
        )
    if cfg.output_dir_allow_outside:
        return
    roots = output_roots()
    target = Path(os.path.normpath(roots[0] / cfg.output_dir))
    if not any(target == root or root in target.parents for root in roots):
        raise ConfigError(
            f"{origin}: 'output_dir' {cfg.output_dir!r} is outside {' and '.join(map(str, roots))}: run folders "
            "stay there; use a folder inside, set LFI_RUNS_ROOT, or set output_dir_allow_outside=true"
        )


def validate(cfg: Config, origin: str = "config") -> Config:
    """Ranges, choices and the combinations across fields; ConfigError names the key."""
    check_ranges(cfg, origin)
    check_run_folder(cfg, origin)
    datasets, teachers = dataset_names(cfg.task), teacher_names()
    if cfg.data.dataset not in datasets:
        raise ConfigError(
            f"{origin}: 'data.dataset' must be one of {datasets} for task {cfg.task!r}, got {cfg.data.dataset!r}"
        )
    if cfg.teacher.name not in teachers:
        raise ConfigError(f"{origin}: 'teacher.name' must be one of {teachers}, got {cfg.teacher.name!r}")
    dense = cfg.task != "classification"
    if dense and cfg.model.name not in DETR_ARCHS:
        raise ConfigError(
            f"{origin}: 'model.name' must be one of {DETR_ARCHS} for {cfg.task}, got {cfg.model.name!r}"
        )
    if cfg.task == "segmentation" and cfg.model.name != "detr":
        raise ConfigError(
            f"{origin}: task segmentation needs model.name=detr (HF has DetrForSegmentation only)"
        )
    if cfg.model.freeze_backbone and cfg.model.checkpoint is None:
        raise ConfigError(
            f"{origin}: 'model.freeze_backbone' is true but 'model.checkpoint' is null: a frozen random "
            "backbone learns nothing; set a checkpoint or model.freeze_backbone=false"
        )
    if cfg.aligned and cfg.teacher.name == "none":
        raise ConfigError(
            f"{origin}: model.variant={cfg.model.variant!r} aligns to C_VLM: set 'teacher.name'"
        )
    if not cfg.aligned and cfg.teacher.name != "none":
        raise ConfigError(
            f"{origin}: teacher.name={cfg.teacher.name!r} but model.variant={cfg.model.variant!r} reads no maps; "
            "set teacher.name=none (a run records the teacher it used)"
        )
    on_the_fly = dense and teacher_spec(cfg.teacher.name).ground_truth
    if cfg.aligned and cfg.teacher.store is None and not on_the_fly:
        raise ConfigError(f"{origin}: 'teacher.store' is required for variant {cfg.model.variant!r}")
    if cfg.teacher.control != "none" and (not cfg.aligned or cfg.teacher.store is None):
        raise ConfigError(
            f"{origin}: teacher.control={cfg.teacher.control!r} replaces the maps of an aligned run read from a "
            "store: set an aligned model.variant and 'teacher.store'"
        )
    d = cfg.data
    if (d.shortcut is not None or d.classes_subset is not None) and not dataset_spec(d.dataset).subsets:
        with_subsets = " or ".join(n for n in dataset_names() if dataset_spec(n).subsets)
        raise ConfigError(
            f"{origin}: 'data.shortcut' / 'data.classes_subset' need data.dataset={with_subsets}"
        )
    if d.shortcut is not None and (d.classes_subset is None or d.classes_subset > 20):
        raise ConfigError(
            f"{origin}: 'data.shortcut' paints one colour per class: set 'data.classes_subset' <= 20, "
            f"got {d.classes_subset!r}"
        )
    if dense and cfg.teacher.source == "masks" and not dataset_spec(d.dataset).masks:
        with_masks = " or ".join(n for n in dataset_names() if dataset_spec(n).masks)
        raise ConfigError(
            f"{origin}: 'teacher.source' masks needs data.dataset={with_masks} (a set with masks)"
        )
    if d.skip_failed and cfg.teacher.store is None:
        raise ConfigError(
            f"{origin}: 'data.skip_failed' skips the images listed in the store's failed.jsonl: set 'teacher.store'"
        )
    if dense and cfg.data.img_size != DataConfig.img_size:  # ignored by detection: refuse rather than mislead
        raise ConfigError(
            f"{origin}: 'data.img_size' is for classification; {cfg.task} resizes each image by 'data.scales' "
            "(shorter side) and 'data.max_size' (longer side), e.g. data.scales=[256] data.max_size=384 on a CPU"
        )
    if cfg.data.gpu_pipeline and dense:
        raise ConfigError(
            f"{origin}: 'data.gpu_pipeline' is for classification; {cfg.task} keeps the CPU loaders"
        )
    if cfg.loss.kd_weight > 0 and cfg.task != "classification":
        raise ConfigError(f"{origin}: 'loss.kd_weight' applies to classification only")
    patch = patch_size_of(cfg.model) if not dense else None
    if patch:
        check_patch_multiple(cfg.data.img_size, patch, origin)
    return cfg


def config_from_dict(data: dict, origin: str = "config") -> Config:
    return validate(_build(Config, data, "", origin), origin)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a dict; a top-level `base: other.yaml` (relative to the file) is read first and the
    file's keys are merged over it, so one row of a table only states what differs from its base."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return merge(read_yaml(path.parent / base, (*_seen, path)), data)


def read_config(path: str | Path | None, overrides: list[str] | None = None) -> tuple[dict, str]:
    """YAML file (and its bases, or nothing) <- dotted overrides, as a dict and a name for error messages."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        data, origin = read_yaml(path), str(path)
    if overrides:
        data = merge(data, parse_overrides(list(overrides)))
        origin += " + overrides"
    return data, origin


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file (and its bases) <- dotted overrides, validated."""
    return config_from_dict(*read_config(path, overrides))


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML (loads back with `load_config`), written atomically."""
    atomic_write(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
