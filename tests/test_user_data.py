"""Your own data through every stage (issue 21): `lfi extract` on class folders and on a COCO-format folder
(`vit`, `llava`, `oracle` teachers), and the README's "Your own data" lines, run as written in a working
directory holding `my_photos/` (12 real PACS photos, three classes, train / val), `my_sketches.zip` (PACS
sketches of the same classes) and `my_coco/` (two real coco_tiny images and their COCO json), with only
size-reducing arguments appended (as tests/test_readme_shared_data.py does for its section)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import zipfile
from pathlib import Path

import pytest

from lfi.cli import main as lfi
from lfi.config import load_config
from lfi.store.shards import InteractionStore
from lfi.train.data import build_data

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own data"
CLASSES = ("dog", "giraffe", "guitar")

#: appended to the README's `lfi train` lines: 32 px, one epoch on the CPU (as tests/test_readme_shared_data.py)
TINY_CLASSIFICATION = [
    "data.img_size=32", "data.batch_size=4", "data.num_workers=0", "data.gpu_pipeline=false",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.enable_progress_bar=false",
]  # fmt: skip
TINY_DETECTION = [
    "model.size=tiny", "model.num_queries=10", "data.scales=[64]", "data.max_size=96", "data.batch_size=2",
    "data.num_workers=0", "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]  # fmt: skip


def make_photos(pacs_zip: Path, out: Path, train: int = 4, val: int = 2) -> None:
    """out/my_photos/{train,val}/<class>/00N.jpg from PACS photos, out/my_sketches.zip from PACS sketches."""
    with zipfile.ZipFile(pacs_zip) as z:
        names = sorted(z.namelist())
        for cls in CLASSES:
            photos = [n for n in names if n.startswith(f"PACS/photo/{cls}/") and not n.endswith("/")][
                : train + val
            ]
            for i, name in enumerate(photos):
                split, number = ("train", i + 1) if i < train else ("val", i - train + 1)
                path = out / "my_photos" / split / cls / f"{number:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(z.read(name))
        with zipfile.ZipFile(out / "my_sketches.zip", "w") as o:
            for cls in CLASSES:
                sketches = [n for n in names if n.startswith(f"PACS/sketch/{cls}/") and not n.endswith("/")][
                    :2
                ]
                for name in sketches:
                    o.writestr(f"my_sketches/{cls}/{Path(name).name}", z.read(name))


def make_coco(coco_zip: Path, out: Path, images: int = 2) -> Path:
    """out/my_coco/annotations.json (COCO format) and out/my_coco/images/: the first `images` annotated coco_tiny
    val images."""
    with zipfile.ZipFile(coco_zip) as z:
        ann = json.loads(z.read("coco_tiny/annotations/instances_val2017.json"))
        annotated = {a["image_id"] for a in ann["annotations"] if not a.get("iscrowd", 0)}
        kept = [im for im in ann["images"] if im["id"] in annotated][:images]
        (out / "my_coco" / "images").mkdir(parents=True)
        for im in kept:
            (out / "my_coco" / "images" / im["file_name"]).write_bytes(
                z.read(f"coco_tiny/val2017/{im['file_name']}")
            )
    ids = {im["id"] for im in kept}
    subset = {**ann, "images": kept, "annotations": [a for a in ann["annotations"] if a["image_id"] in ids]}
    path = out / "my_coco" / "annotations.json"
    path.write_text(json.dumps(subset))
    return path


@pytest.fixture
def workdir(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/main (cwd, with configs/ and the user's data) beside tmp/shared/data/weights (a link to the real)."""
    for needed in ("pacs/PACS-112.zip", "coco/coco_tiny.zip", "weights"):
        if not (shared_data / needed).exists():
            pytest.skip(f"real data lacks {shared_data / needed}")
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    os.symlink((shared_data / "weights").resolve(), data / "weights")
    main = tmp_path / "main"
    main.mkdir()
    os.symlink(REPO / "configs", main / "configs")
    make_photos(shared_data / "pacs" / "PACS-112.zip", main)
    make_coco(shared_data / "coco" / "coco_tiny.zip", main)
    monkeypatch.chdir(main)
    monkeypatch.setenv("LFI_CACHE", str(tmp_path / "cache"))
    return main


def readme_lines() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no '{SECTION}' section"
    block = text.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert all(argv[0] == "lfi" for argv in lines), lines
    return [argv[1:] for argv in lines]


def shrink(argv: list[str]) -> list[str]:
    if argv[0] == "extract":
        return [*argv, "--workers", "0"]
    if argv[0] == "train":
        return [*argv, *(TINY_DETECTION if "coco" in argv[1] else TINY_CLASSIFICATION)]
    return argv


@pytest.mark.slow
@pytest.mark.data
def test_readme_your_own_data_lines_run(workdir: Path) -> None:
    """The README block: vit maps of class folders, an I-ViT trained one epoch on the CPU, evaluated on another
    domain (a zip), a figure and a table; the oracle's maps of a COCO-format folder and a tiny I-DETR epoch."""
    lines = readme_lines()
    assert [a[0] for a in lines] == ["extract", "train", "eval", "viz", "report", "extract", "train", "eval"]
    for argv in lines:
        assert lfi(shrink(argv)) == 0, f"README line failed: lfi {shlex.join(argv)}"
    store = InteractionStore(workdir / "stores" / "my_photos_vit")
    assert len(store.keys()) == 12 and store.metadata["teacher"] == "vit"
    run = workdir / "runs" / "own" / "imagefolder"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == list(CLASSES) and metrics["test"]["val"]["n"] == 6
    tests = json.loads((run / "eval_metrics.json").read_text())["test"]
    assert tests["sketch"]["n"] == 6
    assert (workdir / "maps.png").is_file() and (workdir / "maps.pdf").is_file()
    assert "`runs/own/imagefolder`" in (workdir / "report.md").read_text()
    coco = json.loads((workdir / "runs" / "own" / "coco" / "eval_metrics.json").read_text())["test"]["val"]
    assert "mAP" in coco
    assert len(InteractionStore(workdir / "stores" / "my_coco_oracle").keys()) == 2


def _samples(root: Path, layout: dict[str, int]) -> None:
    from PIL import Image

    for c, (name, count) in enumerate(layout.items()):
        for i in range(count):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32 + 8 * i, 24), (40 * c, 200, 10 * i)).save(path)


def test_oracle_extracts_class_folders_with_boxes_and_training_finds_the_maps(tmp_path: Path, capsys) -> None:
    root = tmp_path / "photos"
    _samples(root, {"tabby_cat": 2, "red_fox": 2})
    out = tmp_path / "store"
    argv = ["extract", "--teacher", "oracle", "--dataset", "imagefolder", "--data", str(root), "--out", str(out),
            "--workers", "0", "--grid", "4"]  # fmt: skip
    assert lfi(argv) == 2  # no boxes.txt: nothing for the oracle to map
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no boxes.txt" in err and str(root) in err
    (root / "boxes.txt").write_text(
        "".join(f"{c}/{i}.png 2 2 20 20\n" for c in ("tabby_cat", "red_fox") for i in (0, 1))
    )
    assert lfi(argv) == 0
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.train_dir={root}", "data.val_fraction=0.5",
                             "model.variant=iq_ic_gc", "teacher.name=oracle", f"teacher.store={out}"])  # fmt: skip
    data = build_data(cfg)
    store = InteractionStore(out)
    keys = [data.train[i]["key"] for i in range(len(data.train))]
    assert keys and all(store[k].valid for k in keys)  # the store keys are the training samples' keys


@pytest.mark.data
def test_coco_folder_from_two_coco_tiny_images_extracts_with_the_oracle(
    shared_data: Path, tmp_path: Path
) -> None:
    if not (shared_data / "coco" / "coco_tiny.zip").is_file():
        pytest.skip("real data lacks coco/coco_tiny.zip")
    ann = make_coco(shared_data / "coco" / "coco_tiny.zip", tmp_path)
    out = tmp_path / "store"
    argv = [
        "extract",
        "--teacher",
        "oracle",
        "--dataset",
        "coco",
        "--data",
        str(ann),
        "--out",
        str(out),
        "--workers",
        "0",
    ]
    assert lfi(argv) == 0
    cfg = load_config(REPO / "configs" / "own" / "coco.yaml",
                      [f"data.train_json={ann}", f"data.val_json={ann}", f"teacher.store={out}"])  # fmt: skip
    data = build_data(cfg)
    store = InteractionStore(out)
    assert len(data.train) == 2 and data.coco_gt is data.val.coco and len(data.classes) == 80
    assert all(store[data.train[i]["key"]].valid for i in range(2))
    (tmp_path / "my_coco" / "images" / data.val.coco.imgs[data.val.image_ids[0]]["file_name"]).unlink()
    assert lfi(argv) == 2  # a listed file that is missing is named (checked before anything runs)


def _tiny_llava_builder():
    path = REPO / "tests" / "extract_vlm" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tiny_llava_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_llava


def test_llava_teacher_reads_the_folder_names(tmp_path: Path) -> None:
    """`lfi extract --teacher llava` on class folders (a tiny random LLaVA saved offline): the answer it is
    forced to give names each image's class, from its folder ('tabby_cat' -> 'tabby cat')."""
    from lfi.extract.vlm import register_capture_attention

    model, processor = _tiny_llava_builder()(register_capture_attention())
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    root = tmp_path / "photos"
    _samples(root, {"tabby_cat": 1, "red_fox": 1})
    out = tmp_path / "store"
    argv = ["extract", "--teacher", "llava", "--teacher-arg", f"checkpoint={tmp_path / 'llava'}",
            "--teacher-arg", "layers=[1]", "--dataset", "imagefolder", "--data", str(root), "--out", str(out),
            "--workers", "0"]  # fmt: skip
    assert lfi(argv) == 0
    store = InteractionStore(out)
    answers = sorted(store[k].info["answer"] for k in store.keys())  # noqa: SIM118 (no __iter__)
    assert len(answers) == 2
    assert "[red fox]" in answers[0] and "[tabby cat]" in answers[1], answers
