"""A tiny synthetic training problem (shapes on class-coloured backgrounds + oracle maps) for train tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfi.config import Config, config_from_dict
from lfi.demo.synthetic import ShortcutShapes
from lfi.extract.oracle import OracleTeacher
from lfi.extract.run import extract
from lfi.store.shards import InteractionStore
from lfi.train.data import ExperimentData

IMG = 32
ALIGNED = ("ic_original", "iq_ic", "iq_ic_gc")  # the variants that read the teacher's maps


def tiny_config(out: Path, variant: str = "iq_ic_gc", epochs: int = 2, **sections) -> Config:
    """A 2-block, 32-wide ViT on 32 px images, CPU, deterministic, no progress bar."""
    cfg = {
        "experiment": variant, "output_dir": str(out), "seed": 0,
        "teacher": {"name": "oracle", "store": str(out / "store")} if variant in ALIGNED else {"name": "none"},
        "model": {"name": "vit_tiny_patch16_224", "variant": variant,
                  "timm_kwargs": {"img_size": IMG, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}},
        "data": {"dataset": "synthetic", "img_size": IMG, "batch_size": 16, "num_workers": 0, "augment": False},
        "optim": {"lr": 1e-3, "warmup_epochs": 0.5},
        "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1, "deterministic": True,
                    "enable_progress_bar": False, "log_every_n_steps": 1},
    }  # fmt: skip
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return config_from_dict(cfg, "tiny_config")


def tiny_data(n_train: int = 48) -> ExperimentData:
    train = ShortcutShapes("train", n_train, size=IMG)
    val = ShortcutShapes("val", 16, size=IMG)
    return ExperimentData(train, val, {"id": val, "ood": ShortcutShapes("ood", 16, size=IMG)}, train.classes)


def write_store(data: ExperimentData, root: Path) -> InteractionStore:
    extract(OracleTeacher(grid=(8, 8)), data.train, root, progress=False)
    return InteractionStore(root, expect={"teacher": "oracle"})


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[ExperimentData, InteractionStore, Path]:
    data = tiny_data()
    return data, write_store(data, tmp_path / "store"), tmp_path
