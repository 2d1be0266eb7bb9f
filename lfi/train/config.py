"""Experiment configuration: typed dataclasses, loaded from YAML with dotted command-line overrides.

    cfg = load_config("configs/table1/ivit_s.yaml", ["trainer.max_epochs=3", "model.name=vit_tiny_patch16_224"])

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type raises
`ConfigError` naming the dotted key, the expected type and the file or override it came from. Override
values are parsed as YAML scalars (``3`` -> int, ``1e-3`` -> float, ``null`` -> None, ``[0, 1]`` -> list).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from lfi.models import TABLE3

TEACHERS = ("llava", "vit", "oracle", "none")
DATASETS = ("tinyimagenet", "pacs", "vlcs", "synthetic")


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the dotted key."""


@dataclass
class TeacherConfig:
    """Which teacher produced the interaction maps (C_VLM) and where they are.

    name: 'llava' (the paper's VLM, LLaVA-1.5), or an offline substitute: 'vit' (VFM->VFM, DeiT-Tiny
        relevance) or 'oracle' (ground-truth boxes); 'none' for runs that read no maps.
    store: folder of the interaction store written by `lfi extract`; None only with teacher 'none' or a
        model whose variant has no constraint.
    """

    name: str = "none"
    store: str | None = None


@dataclass
class ModelConfig:
    """The student: a timm ViT, converted to I-ViT by the Table 3 switches of `variant`.

    name: timm model name; checkpoint: local weights (safetensors preferred), None = random init.
    timm_kwargs: passed to timm.create_model (img_size, patch_size, depth, ...); num_classes comes from data.
    variant: a key of lfi.TABLE3 ('vit', 'iq_gc', 'ic_original', 'iq_ic', 'iq_ic_gc').
    freeze_backbone: train only P'_q, the gates and the head (paper 5.1.2, with a checkpoint); False (the
        default) trains everything, as a random init and 'ic_original' need. blocks / align_layers / gate_hidden: see lfi.IViTConfig.
    """

    name: str = "vit_small_patch16_224"
    checkpoint: str | None = None
    timm_kwargs: dict = field(default_factory=dict)
    variant: str = "vit"
    freeze_backbone: bool = False
    blocks: list[int] | None = None
    align_layers: list[int] | None = None
    gate_hidden: int = 8


@dataclass
class KDConfig:
    """Result-oriented knowledge distillation (Hinton et al. 2015) from a teacher with logits.

    weight: 0 disables it. The teacher is a timm classifier over ImageNet-1k (the offline 'vit' teacher,
    DeiT-Tiny); the dataset's classes are mapped to their ImageNet indices by wnid through `synsets`.
    """

    weight: float = 0.0
    temperature: float = 4.0
    model: str = "deit_tiny_patch16_224"
    checkpoint: str | None = None
    synsets: str | None = None
    input_size: int = 224


@dataclass
class LossConfig:
    """L = L_task + align_weight * L_align (Eq. 13) [+ kd.weight * L_kd for the KD baseline]."""

    align_weight: float = 1.0
    direction: str = "teacher_student"
    label_smoothing: float = 0.0
    kd: KDConfig = field(default_factory=KDConfig)


@dataclass
class DataConfig:
    """Datasets and loading. root: data folder (e.g. ../shared/data); ratio: stratified train fraction
    (Table 2); train_domains / test_domains: PACS/VLCS domains (None = all train, no cross-domain test)."""

    dataset: str = "tinyimagenet"
    root: str = "../shared/data"
    img_size: int = 224
    ratio: float = 1.0
    train_domains: list[str] | None = None
    test_domains: list[str] | None = None
    augment: bool = True
    batch_size: int = 64
    num_workers: int = 4
    split_seed: int = 0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to min_lr_ratio * lr, stepped per optimizer step."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01


@dataclass
class TrainerConfig:
    """Arguments of lightning.Trainer (the subset lfi uses)."""

    max_epochs: int = 50
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: bool = False
    log_every_n_steps: int = 10
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    enable_progress_bar: bool = True
    log_maps_every_n_epochs: int = 1  # TensorBoard figures of the interaction maps; 0 turns them off


@dataclass
class Config:
    """One experiment. The run folder is output_dir/experiment; it receives config.yaml, logs,
    checkpoints and metrics.json."""

    experiment: str = "run"
    paper_row: str = ""
    seed: int = 0
    output_dir: str = "runs"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.experiment


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


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(cfg: Config, origin: str = "config") -> Config:
    """Checks across fields (choices and combinations); ConfigError names the key."""
    checks = [
        (cfg.teacher.name in TEACHERS, "teacher.name", f"one of {TEACHERS}", cfg.teacher.name),
        (cfg.model.variant in TABLE3, "model.variant", f"one of {sorted(TABLE3)}", cfg.model.variant),
        (cfg.data.dataset in DATASETS, "data.dataset", f"one of {DATASETS}", cfg.data.dataset),
        (0 < cfg.data.ratio <= 1, "data.ratio", "in (0, 1]", cfg.data.ratio),
        (cfg.data.batch_size >= 1, "data.batch_size", ">= 1", cfg.data.batch_size),
        (cfg.optim.lr > 0, "optim.lr", "> 0", cfg.optim.lr),
        (cfg.loss.align_weight >= 0, "loss.align_weight", ">= 0", cfg.loss.align_weight),
        (cfg.loss.kd.weight >= 0, "loss.kd.weight", ">= 0", cfg.loss.kd.weight),
        (cfg.loss.kd.temperature > 0, "loss.kd.temperature", "> 0", cfg.loss.kd.temperature),
        (cfg.trainer.max_epochs >= 1, "trainer.max_epochs", ">= 1", cfg.trainer.max_epochs),
        (cfg.trainer.precision in ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed"), "trainer.precision",
         "32-true, bf16-mixed, bf16-true or 16-mixed", cfg.trainer.precision),
    ]  # fmt: skip
    for ok, key, expected, got in checks:
        if not ok:
            raise ConfigError(f"{origin}: '{key}' must be {expected}, got {got!r}")
    if cfg.model.freeze_backbone and cfg.model.checkpoint is None:
        raise ConfigError(
            f"{origin}: 'model.freeze_backbone' is true but 'model.checkpoint' is null: a frozen "
            "random backbone learns nothing; set a checkpoint or model.freeze_backbone=false"
        )
    needs_maps = TABLE3[cfg.model.variant].constraint != "none"
    if needs_maps and cfg.teacher.name == "none":
        raise ConfigError(
            f"{origin}: model.variant={cfg.model.variant!r} aligns to C_VLM: set 'teacher.name'"
        )
    if needs_maps and cfg.teacher.store is None:
        raise ConfigError(f"{origin}: 'teacher.store' is required for variant {cfg.model.variant!r}")
    return cfg


def build_dataclass(cls: type, data: dict, origin: str = "config") -> Any:
    """Any config dataclass (nested dataclasses included) from a dict: unknown keys and wrong types raise
    ConfigError naming the dotted key. Shared by the classification and detection configs."""
    return _build(cls, data, "", origin)


def config_from_dict(data: dict, origin: str = "config") -> Config:
    return validate(build_dataclass(Config, data, origin), origin)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a dict; a top-level `base: other.yaml` (relative to the file) is read first and the
    file's keys are merged over it, so one row of a table only states what differs from its base."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return _merge(read_yaml(path.parent / base, (*_seen, path)), data)


def read_config(path: str | Path | None, overrides: list[str] | None = None) -> tuple[dict, str]:
    """YAML file (and its bases, or nothing) <- dotted overrides, as a dict and a name for error messages."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        data, origin = read_yaml(path), str(path)
    if overrides:
        data = _merge(data, parse_overrides(list(overrides)))
        origin += " + overrides"
    return data, origin


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file (and its bases) <- dotted overrides, validated."""
    return config_from_dict(*read_config(path, overrides))


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML (loads back with `load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
