"""Your own data (issue 21): class folders (`lfi.data.imagefolder`) and COCO-format sets by path
(`lfi.data.coco`), in folders or zips, through `build_dataset` / `build_data`, and the errors for the usual
mistakes, each naming the file or config key. Small generated images: no real data needed, each test < 1 s."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfi.config import ConfigError, load_config
from lfi.data.base import ImageDecodeError
from lfi.data.build import build_dataset
from lfi.data.imagefolder import ImageFolder
from lfi.data.keys import image_key
from lfi.train.data import build_data


def png(size: tuple[int, int] = (20, 16), mode: str = "RGB", seed: int = 0, fmt: str = "PNG") -> bytes:
    """An encoded image of `size` (W, H) in `mode` (random pixels)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_folder(root: Path, layout: dict[str, int], seed: int = 0) -> Path:
    """root/<class>/<i>.png, `layout` = {class: count}; sizes and modes vary (mixed sizes are fine)."""
    for c, (name, count) in enumerate(layout.items()):
        for i in range(count):
            mode = ("RGB", "L", "RGBA")[i % 3]
            path = root / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png((16 + 4 * i, 12 + 2 * c), mode, seed=seed * 100 + c * 10 + i))
    return root


def zip_folder(folder: Path, out: Path, inside: str = "") -> Path:
    """A zip of `folder`'s files, under the enclosing folder `inside` (none when '')."""
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, (Path(inside) / path.relative_to(folder)).as_posix())
    return out


LAYOUT = {"tabby_cat": 3, "dog": 2}


def test_class_folders_give_samples_in_the_common_format(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", LAYOUT)
    (root / ".DS_Store").write_bytes(b"clutter")
    (root / "dog" / "Thumbs.db").write_bytes(b"clutter")
    ds = build_dataset("imagefolder", root, "train")
    assert isinstance(ds, ImageFolder) and ds.classes == ["dog", "tabby_cat"]  # sorted folder names
    assert len(ds) == 5 and ds.labels == [0, 0, 1, 1, 1] and not ds.has_boxes
    sample = ds[2]
    assert sample["relpath"] == "tabby_cat/000.png" and sample["label"] == 1
    assert sample["class_name"] == "tabby cat"  # the name teachers read: '_' is a space
    assert sample["key"] == image_key("tabby_cat/000.png", (root / "tabby_cat" / "000.png").read_bytes())
    assert sample["image"].dtype == torch.uint8 and sample["boxes"].shape == (0, 4)
    shapes = {tuple(ds[i]["image"].shape) for i in range(len(ds))}
    assert len(shapes) > 1 and all(s[0] == 3 for s in shapes)  # mixed sizes and modes, all RGB


def test_a_zip_reads_like_the_folder_with_or_without_an_enclosing_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", LAYOUT)
    keys = [s["key"] for s in ImageFolder(root)]
    for inside in ("", "photos", "export/photos"):
        z = zip_folder(root, tmp_path / f"photos_{inside.replace('/', '_')}.zip", inside)
        ds = ImageFolder(z)
        assert ds.classes == ["dog", "tabby_cat"] and [s["key"] for s in ds] == keys, inside


def test_split_folders_and_classes_txt(tmp_path: Path) -> None:
    make_folder(tmp_path / "set" / "train", LAYOUT)
    make_folder(tmp_path / "set" / "valid", LAYOUT, seed=1)
    assert len(ImageFolder(tmp_path / "set", "train")) == 5
    val = ImageFolder(tmp_path / "set", "val")  # 'val' also finds valid/
    assert (
        val[0]["relpath"] == "dog/000.png"
        and val[0]["key"] != ImageFolder(tmp_path / "set", "train")[0]["key"]
    )
    with pytest.raises(ValueError, match=r"split folders \['train', 'valid'\].*'test'"):
        ImageFolder(tmp_path / "set", "test")
    (tmp_path / "set" / "train" / "classes.txt").write_text("# label order\ntabby_cat\ndog\n")
    assert ImageFolder(tmp_path / "set", "train").classes == ["tabby_cat", "dog"]
    (tmp_path / "set" / "train" / "classes.txt").write_text("tabby_cat\nbird\n")
    with pytest.raises(
        ValueError, match=r"classes.txt: disagrees.*no folder for listed classes \['bird'\].*\['dog'\]"
    ):
        ImageFolder(tmp_path / "set", "train")


def test_boxes_txt_feeds_the_oracle(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", LAYOUT)
    (root / "boxes.txt").write_text("dog/000.png 1 2 10 8\ndog/000.png 0 0 4 4\ntabby_cat/001.png 2 2 6 6\n")
    ds = ImageFolder(root)
    assert (
        ds.has_boxes
        and ds[0]["boxes"].tolist() == [[1, 2, 10, 8], [0, 0, 4, 4]]
        and ds[1]["boxes"].shape == (0, 4)
    )
    (root / "boxes.txt").write_text("dog/000.png 1 2 10\n")
    with pytest.raises(ValueError, match=r"boxes.txt:1: expected '<class>/<image> x0 y0 x1 y1'"):
        ImageFolder(root)
    (root / "boxes.txt").write_text("cat/9.png 1 2 10 8\n")
    with pytest.raises(ValueError, match=r"boxes.txt:1: 'cat/9.png' is not an image of this set"):
        ImageFolder(root)


def test_usual_mistakes_are_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", LAYOUT)
    (root / "bird").mkdir()
    with pytest.raises(
        ValueError, match=r"photos/bird: class folder 'bird' holds no images \(expected files ending in .jpg"
    ):
        ImageFolder(root)
    (root / "bird" / "notes.txt").write_text("not an image")
    (root / "bird" / "0.heic").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"bird: class folder 'bird' holds no images"):
        ImageFolder(root)
    (root / "bird" / "1.jpg").write_bytes(png(fmt="JPEG"))
    with pytest.raises(
        ValueError, match=r"files that are not images in class folders: bird/0.heic, bird/notes.txt"
    ):
        ImageFolder(root)
    for name in ("0.heic", "notes.txt"):
        (root / "bird" / name).unlink()
    (root / "bird" / "2.jpg").write_bytes(b"this is text, not a JPEG")
    ds = ImageFolder(root)
    with pytest.raises(ImageDecodeError, match=r"photos:bird/2.jpg: cannot decode as an image") as error:
        ds[ds.records.index(next(r for r in ds.records if r.relpath == "bird/2.jpg"))]
    assert error.value.path.endswith("bird/2.jpg")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(png())
    with pytest.raises(
        ValueError,
        match=r"flat: images directly in it \(a.png\); expected one sub-folder of images per class",
    ):
        ImageFolder(flat)
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder or zip"):
        ImageFolder(tmp_path / "nowhere")


def test_val_and_test_sets_read_the_training_classes(tmp_path: Path) -> None:
    test = make_folder(tmp_path / "test", {"dog": 1, "tabby_cat": 1})
    ds = ImageFolder(test, classes=["tabby_cat", "dog"])  # labels index the given classes
    assert [(r.relpath, r.label) for r in ds.records] == [("tabby_cat/000.png", 0), ("dog/000.png", 1)]
    with pytest.raises(
        ValueError, match=r"no folder for \['bird'\] \(every class of training needs its folder here\)"
    ):
        ImageFolder(test, classes=["bird", "dog", "tabby_cat"])
    with pytest.raises(ValueError, match=r"\['tabby_cat'\] are not training classes"):
        ImageFolder(test, classes=["dog"])


def _cfg(*overrides: str):
    return load_config(None, ["data.dataset=imagefolder", *overrides])


def test_build_data_reads_folders_by_path(tmp_path: Path) -> None:
    train = make_folder(tmp_path / "train", {"dog": 4, "tabby_cat": 4})
    val = make_folder(tmp_path / "val", {"tabby_cat": 1, "dog": 2}, seed=1)
    other = zip_folder(
        make_folder(tmp_path / "sketch", {"dog": 1, "tabby_cat": 1}, seed=2), tmp_path / "sketch.zip"
    )
    data = build_data(
        _cfg(f"data.train_dir={train}", f"data.val_dir={val}", f"data.test_dirs={{sketch: {other}}}")
    )
    assert data.classes == ["dog", "tabby_cat"] and len(data.train) == 8 and len(data.val) == 3
    assert list(data.tests) == ["sketch"] and data.tests["sketch"].labels == [0, 1]
    assert build_data(_cfg(f"data.train_dir={train}", f"data.val_dir={val}")).tests["val"] is not None
    held = build_data(
        _cfg(f"data.train_dir={train}", "data.val_fraction=0.25")
    )  # no val_dir: held out of train
    assert len(held.train) == 6 and len(held.val) == 2 and held.tests == {"val": held.val}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((), r"'data.train_dir' is required for data.dataset=imagefolder"),
        (("data.train_dir={train}",), r"needs 'data.val_dir' .* or 'data.val_fraction' > 0"),
        (("data.train_dir={tmp}/nope", "data.val_fraction=0.5"), r"'data.train_dir': .*/nope does not exist"),
        (("data.train_dir={train}", "data.val_dir={tmp}/nope"), r"'data.val_dir': .*/nope does not exist"),
        (("data.train_dir={train}", "data.val_fraction=0.5", "data.test_dirs={{sketch: {test}}}"),
         r"'data.test_dirs.sketch': .*no folder for \['tabby_cat'\]"),
        (("data.train_dir={train}", "data.val_fraction=0.5", "data.test_domains=[sketch]"), r"data.test_dirs"),
        (("data.train_dir={train}", "data.val_fraction=0.5", "data.train_json=a.json"),
         r"'data.train_json' is read by data.dataset=coco"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_key(tmp_path: Path, overrides: tuple[str, ...], message: str) -> None:
    train = make_folder(tmp_path / "train", {"dog": 2, "tabby_cat": 2})
    test = make_folder(tmp_path / "test", {"dog": 1})
    cfg = _cfg(*(o.format(train=train, test=test, tmp=tmp_path) for o in overrides))
    with pytest.raises(ConfigError, match=message):
        build_data(cfg)


def test_path_keys_belong_to_their_datasets() -> None:
    with pytest.raises(
        ConfigError, match=r"'data.train_dir' is read by data.dataset=imagefolder or coco, not 'pacs'"
    ):
        build_data(load_config(None, ["data.dataset=pacs", "data.train_dir=x"]))
    det = ["task=detection", "model.name=detr", "model.variant=vit", "data.dataset=coco"]
    with pytest.raises(ConfigError, match=r"are the images of 'data.train_json'"):
        build_data(load_config(None, [*det, "data.train_dir=x"]))


# --- COCO-format sets by path ---------------------------------------------------------------------------------


def make_coco(folder: Path, names: list[str], categories: list[dict] | None = None) -> Path:
    """folder/images/<name> (W 24 x H 16 each, one box) and folder/annotations.json listing them."""
    categories = categories or [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, name in enumerate(names, 1):
        (folder / "images" / name).write_bytes(png((24, 16), seed=i, fmt="JPEG"))
        images.append({"id": i, "file_name": name, "width": 24, "height": 16})
        anns.append({"id": i, "image_id": i, "category_id": categories[i % len(categories)]["id"],
                     "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0})  # fmt: skip
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def test_any_coco_json_by_path(tmp_path: Path) -> None:
    ann = make_coco(tmp_path / "my_coco", ["a.jpg", "b.jpg"])
    ds = build_dataset("coco", ann, "train")  # images found in images/ beside the json
    assert len(ds) == 2 and ds.classes == ["person", "car"] and ds.coco_ids == [1, 3]
    sample = ds[0]
    assert sample["relpath"] == "a.jpg" and sample["boxes"].tolist() == [[2, 3, 12, 11]]
    assert (
        sample["labels"].tolist() == [0]
        and ds[1]["labels"].tolist() == [1]
        and sample["key"].startswith("a.jpg#")
    )
    zipped = zip_folder(tmp_path / "my_coco" / "images", tmp_path / "images.zip", "export")
    from lfi.data.coco import CocoDetection

    assert [s["key"] for s in CocoDetection(ann, images=zipped)] == [s["key"] for s in ds]


def test_coco_mistakes_are_named(tmp_path: Path) -> None:
    ann = make_coco(tmp_path / "my_coco", ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "my_coco" / "images" / "b.jpg").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"annotations.json: 1 of 3 listed images \('file_name'\) are not in .*'b.jpg'",
    ):
        build_dataset("coco", ann, "train")
    det = ["task=detection", "model.name=detr", "model.variant=vit", "data.dataset=coco"]
    cfg = load_config(None, [*det, f"data.train_json={ann}", f"data.val_json={ann}"])
    with pytest.raises(ConfigError, match=r"'data.train_json': .*'b.jpg'; give the folder of the images"):
        build_data(cfg)
    other = make_coco(tmp_path / "other", ["x.jpg"], [{"id": 1, "name": "person"}])
    good = make_coco(tmp_path / "good", ["a.jpg", "b.jpg"])
    cfg = load_config(None, [*det, f"data.train_json={good}", f"data.val_json={other}"])
    with pytest.raises(ConfigError, match=r"different categories .*only in train \[\(3, 'car'\)\]"):
        build_data(cfg)
    with pytest.raises(ConfigError, match=r"'data.val_json' is required"):
        build_data(load_config(None, [*det, f"data.train_json={good}"]))
    data = build_data(load_config(None, [*det, f"data.train_json={good}", f"data.val_json={good}"]))
    assert len(data.train) == 2 and data.classes == ["person", "car"] and data.category_ids == [1, 3]
