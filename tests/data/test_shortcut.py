"""The shortcut test set (lfi.data.shortcut): cue agreement at rate p, the band outside the box, an OOD cue
independent of the label, the original image keys, distinct image-cache keys, the configs, and a tiny
training run that reports id / ood / clean (its I-ViT reading an oracle store of the *plain* images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from lfi.config import ConfigError, load_config
from lfi.data.cache import ImageCache, dataset_digest
from lfi.data.collate import collate_classification
from lfi.data.shortcut import PALETTE, ShortcutCue, band_box, cue_class, shortcut_splits, subset_classes
from lfi.data.tinyimagenet import TinyImageNet

REPO = Path(__file__).resolve().parents[2]
WNIDS = ("n001", "n002", "n003", "n004", "n005")
N_TRAIN, N_VAL = 16, 6


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _box(i: int) -> str:
    """Boxes of every kind: the whole image (i % 8 == 0: no margin, the band must overlap it), else varied."""
    if i % 8 == 0:
        return "0\t0\t63\t63"
    x0, y0 = (i * 7) % 30, (i * 11) % 30
    return f"{x0}\t{y0}\t{min(63, x0 + 18 + (i % 3) * 12)}\t{min(63, y0 + 20 + (i % 4) * 9)}"


@pytest.fixture(scope="module")
def tin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TinyImageNet folder: 5 classes, 16 train and 6 val noise images each, boxes of every kind."""
    root = tmp_path_factory.mktemp("tin") / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    val_lines = []
    for c, w in enumerate(WNIDS):
        (root / "train" / w / "images").mkdir(parents=True)
        lines = []
        for i in range(N_TRAIN):
            (root / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(_jpeg(100 * c + i))
            lines.append(f"{w}_{i}.JPEG\t{_box(i + c)}")
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(lines) + "\n")
        for i in range(N_VAL):
            n = c * N_VAL + i
            (root / "val" / "images" / f"val_{n}.JPEG").write_bytes(_jpeg(10_000 + n))
            val_lines.append(f"val_{n}.JPEG\t{w}\t{_box(n + 3)}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(val_lines) + "\n")
    return root.parent


def _overlap(region: tuple[int, int, int, int], box: tuple[float, ...]) -> float:
    x0, y0, x1, y1 = region
    return max(0.0, min(x1, box[2]) - max(x0, box[0])) * max(0.0, min(y1, box[3]) - max(y0, box[1]))


def test_cue_agreement_follows_p_and_ood_is_independent():
    paths = [f"train/x/images/x_{i}.JPEG" for i in range(20_000)]
    labels = [i % 10 for i in range(20_000)]
    for p in (0.9, 0.95):
        cues = [cue_class(y, 10, r, "rule", p, seed=0) for y, r in zip(labels, paths, strict=True)]
        agree = np.mean([c == y for c, y in zip(cues, labels, strict=True)])
        assert abs(agree - p) < 0.01, (p, agree)
        wrong = [c for c, y in zip(cues, labels, strict=True) if c != y and y == 3]
        assert set(wrong) == set(range(10)) - {3}  # the disagreeing cue: any other class
    ood = [cue_class(y, 10, r, "random", 0.95, seed=0) for y, r in zip(labels, paths, strict=True)]
    assert abs(np.mean([c == y for c, y in zip(ood, labels, strict=True)]) - 0.1) < 0.01
    table = np.zeros((10, 10))
    for y, c in zip(labels, ood, strict=True):
        table[y, c] += 1
    assert np.abs(table / table.sum(1, keepdims=True) - 0.1).max() < 0.03  # cue distribution alike per label
    # deterministic per image, whatever else is in the set; the seed changes the draw
    assert cue_class(3, 10, paths[7], "rule", 0.5, 0) == cue_class(3, 10, paths[7], "rule", 0.5, 0)
    assert [cue_class(1, 10, r, "random", 1, 0) for r in paths[:50]] != [
        cue_class(1, 10, r, "random", 1, 1) for r in paths[:50]
    ]


def test_band_goes_along_the_widest_margin():
    assert band_box(torch.tensor([[20.0, 5.0, 60.0, 60.0]]), (64, 64), 0.1875) == ("left", (0, 0, 12, 64))
    assert band_box(torch.tensor([[0.0, 0.0, 64.0, 40.0]]), (64, 64), 0.1875) == ("bottom", (0, 52, 64, 64))
    assert band_box(torch.tensor([[0.0, 30.0, 50.0, 64.0]]), (64, 64), 0.125) == ("top", (0, 0, 64, 8))
    assert band_box(torch.zeros(0, 4), (64, 64), 0.25)[0] == "left"


def test_samples_carry_the_cue_outside_the_box(tin: Path):
    plain = TinyImageNet(tin, "train")
    ds = ShortcutCue(plain, [0, 2, 4], "rule", agreement=0.75, seed=1)
    assert len(ds) == 3 * N_TRAIN and ds.classes == ["thing n001", "thing n003", "thing n005"]
    assert ds.wnids == ["n001", "n003", "n005"] and sorted(set(ds.labels)) == [0, 1, 2]
    outside = 0
    for i in range(len(ds)):
        s, orig = ds[i], plain[ds.indices[i]]
        assert (
            s["key"] == orig["key"] and s["relpath"] == orig["relpath"]
        )  # the store's keys are the plain set's
        assert s["label"] == [0, 2, 4].index(orig["label"]) and s["wnid"] == orig["wnid"]
        assert torch.equal(s["boxes"], orig["boxes"])
        _, (x0, y0, x1, y1) = ds.band(i)
        colour = torch.tensor(PALETTE[s["cue"]], dtype=torch.uint8)[:, None, None]
        assert (s["image"][:, y0:y1, x0:x1] == colour).all()
        rest = torch.ones(64, 64, dtype=torch.bool)
        rest[y0:y1, x0:x1] = False
        assert torch.equal(s["image"][:, rest], orig["image"][:, rest])  # nothing else changes
        box = tuple(orig["boxes"][0].tolist())
        margin = max(box[0], box[1], 64 - box[2], 64 - box[3])
        if margin >= 12:  # room for the band: it is entirely outside the box
            assert _overlap((x0, y0, x1, y1), box) == 0
            outside += 1
        else:  # no room: it covers only the box's outer strip, 12 - margin px wide
            assert _overlap((x0, y0, x1, y1), box) <= (12 - margin) * 64
    assert outside > len(ds) // 2
    clean = ShortcutCue(plain, [0, 2, 4], "none")
    assert torch.equal(clean[5]["image"], plain[clean.indices[5]]["image"]) and "cue" not in clean[5]


def test_shortcut_splits_and_image_cache_keys(tin: Path, tmp_path: Path):
    train, val = TinyImageNet(tin, "train"), TinyImageNet(tin, "val")
    assert subset_classes(200, 20)[:3] == [0, 10, 20] and subset_classes(5, 3) == [0, 1, 3]
    tr, va, tests = shortcut_splits(train, val, classes_subset=3, agreement=0.9, seed=0)
    assert set(tests) == {"id", "ood", "clean"} and va is tests["id"]
    assert len(tr) == 3 * N_TRAIN and all(len(t) == 3 * N_VAL for t in tests.values())
    assert tests["ood"].cue == "random" and tests["clean"].cue == "none"
    digests = {
        "plain": dataset_digest(Subset(train, tr.indices), 64),
        "p0.9": dataset_digest(tr, 64),
        "p0.95": dataset_digest(shortcut_splits(train, val, 3, 0.95)[0], 64),
        "width": dataset_digest(shortcut_splits(train, val, 3, 0.9, width=0.25)[0], 64),
        "seed": dataset_digest(shortcut_splits(train, val, 3, 0.9, seed=1)[0], 64),
        "id": dataset_digest(tests["id"], 64),
        "ood": dataset_digest(tests["ood"], 64),
        "clean": dataset_digest(tests["clean"], 64),
    }
    assert len(set(digests.values())) == len(digests), digests
    held = Subset(tr, list(range(0, len(tr), 4)))  # a held-out val split of the shortcut train set
    assert dataset_digest(held, 64) not in digests.values()
    # the GPU path's cache holds the painted images
    cache = ImageCache.build(held, 64, tmp_path, progress=False)
    assert cache.keys == [held[i]["key"] for i in range(len(held))]
    assert np.array_equal(cache.images[1], held[1]["image"].numpy()) and cache.labels.tolist() == [
        held[i]["label"] for i in range(len(held))
    ]
    plain_tests = shortcut_splits(train, val, classes_subset=3, agreement=None)[2]
    assert set(plain_tests) == {"val"}
    with pytest.raises(ValueError, match="classes_subset to at most 20"):
        ShortcutCue(train, list(range(5)) * 5, "rule")


def test_build_data_serves_id_ood_clean(tin: Path):
    from lfi.train.data import build_data

    cfg = load_config(
        None, [f"data.root={tin}", "data.shortcut=0.9", "data.classes_subset=4", "data.val_fraction=0.25"]
    )
    data = build_data(cfg)
    assert (
        set(data.tests) == {"id", "ood", "clean"} and len(data.classes) == 4 and data.wnids == list(WNIDS[:4])
    )
    assert len(data.train) + len(data.val) == 4 * N_TRAIN and isinstance(data.val, Subset)
    assert isinstance(data.val.dataset, ShortcutCue) and data.val.dataset.cue == "rule"
    batch = next(iter(DataLoader(data.tests["ood"], batch_size=8, collate_fn=collate_classification)))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["label"].max() < 4 and batch["cue"].shape == (8,)
    with pytest.raises(ConfigError, match="data.shortcut"):
        load_config(None, ["data.shortcut=1.5"])


def test_real_tinyimagenet_subset(shared_data: Path):
    """On the shared data: the 20-class set of the study config, its agreement rates and bands."""
    train, val = TinyImageNet(shared_data, "train"), TinyImageNet(shared_data, "val")
    tr, _, tests = shortcut_splits(train, val, classes_subset=20, agreement=0.95)
    assert len(tr) == 20 * 200 and len(tests["id"]) == 20 * 50
    agree = np.mean([c == r.label for c, r in zip(tr.cues, tr.records, strict=True)])
    assert abs(agree - 0.95) < 0.015
    ood = tests["ood"]
    assert abs(np.mean([c == r.label for c, r in zip(ood.cues, ood.records, strict=True)]) - 1 / 20) < 0.025
    free = np.mean([_overlap(tr.band(i)[1], r.boxes[0]) == 0 for i, r in enumerate(tr.records)])
    assert (
        0.55 < free < 0.8
    )  # 67% of the 40,000 training images leave room for the whole band outside the box


# the run configs of the shortcut rows; study*.yaml beside them are studies over them (tests/train/test_study.py)
ROW_CONFIGS = sorted(
    p for p in (REPO / "configs" / "study" / "shortcut").glob("*.yaml") if not p.name.startswith("study")
)


@pytest.mark.parametrize("path", ROW_CONFIGS, ids=lambda p: p.stem)
def test_study_configs_load(path: Path):
    cfg = load_config(path)
    assert cfg.experiment == f"study/shortcut/{path.stem}"
    assert cfg.data.shortcut == 0.95 and cfg.data.classes_subset == 20 and cfg.data.val_fraction > 0
    assert cfg.model.checkpoint and (cfg.teacher.store == "stores/tin_train_oracle14") == cfg.aligned
    assert (cfg.loss.kd_weight > 0) == path.stem.startswith("kd")


def test_study_rows_are_complete():
    rows = {p.stem for p in ROW_CONFIGS}
    assert {"vit", "vit_full", "iq_gc", "iq_ic_gc", "kd"} <= rows


@pytest.mark.parametrize("gpu_pipeline", [False, True])
def test_tiny_training_reports_id_ood_clean(tin: Path, tmp_path: Path, gpu_pipeline: bool):
    """I-ViT on the shortcut set, aligned to an oracle store extracted on the plain images (CPU, seconds)."""
    from lfi.extract.oracle import OracleTeacher
    from lfi.extract.run import extract
    from lfi.train.engine import train
    from tests.train.conftest import tiny_config

    extract(OracleTeacher(grid=(8, 8)), TinyImageNet(tin, "train"), tmp_path / "store", progress=False)
    cfg = tiny_config(
        tmp_path, "iq_ic_gc", epochs=1,
        data={"dataset": "tinyimagenet", "root": str(tin), "shortcut": 0.9, "classes_subset": 3, "val_fraction": 0.25,
              "augment": True, "gpu_pipeline": gpu_pipeline, "cache_dir": str(tmp_path / "cache")},
    )  # fmt: skip
    result = train(cfg)
    tests = result.metrics["test"]
    assert {"id", "ood", "clean"} <= set(tests) and tests["ood"]["n"] == 3 * N_VAL
    assert result.metrics["classes"] == ["thing n001", "thing n002", "thing n004"]
