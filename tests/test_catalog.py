"""A new dataset or teacher is one module plus one catalog row (issue 29 item 2): config validation,
`build_dataset`, `build_teacher` and the CLI all read the row."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lfi import catalog
from lfi.config import ConfigError, load_config

TOY_MODULE = textwrap.dedent('''
    import torch

    from lfi.extract.teacher import Teacher, TeacherOutput, register_teacher


    class ToyDataset:
        """Three 8x8 grey images of split `split`; `root` is only recorded."""

        def __init__(self, root, split="train"):
            self.root, self.split, self.classes = root, split, ["a", "b"]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            image = torch.full((3, 8, 8), 40 * i, dtype=torch.uint8)
            return {"relpath": f"{self.split}/{i}.png", "data": bytes([i]), "image": image, "label": i % 2}


    class ToyTeacher(Teacher):
        name = "toy"
        grid = (2, 2)

        def __call__(self, batch):
            fore = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(len(batch), 2, 2)
            return TeacherOutput(fore=fore, back=torch.zeros_like(fore))


    @register_teacher("toy")
    def build_toy(**kwargs):
        return ToyTeacher()
''')


@pytest.fixture
def toy_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The toy module on the path and its two rows in the catalog (removed afterwards)."""
    (tmp_path / "lfi_toy_catalog.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    catalog.add_dataset(
        catalog.DatasetSpec("toy", "Toy shapes", ("classification",), "lfi_toy_catalog:ToyDataset")
    )
    catalog.add_teacher(
        catalog.TeacherSpec("toy", "toy teacher (not the paper's LLaVA-1.5)", "lfi_toy_catalog")
    )
    yield tmp_path
    catalog.remove("toy")
    sys.modules.pop("lfi_toy_catalog", None)


TOY_CONFIG = ["data.dataset=toy", "model.variant=iq_ic_gc", "teacher.name=toy", "teacher.store=stores/toy"]


def test_unknown_names_are_refused_by_config_and_build() -> None:
    from lfi.data.build import build_dataset

    with pytest.raises(ConfigError, match="'data.dataset' must be one of"):
        load_config(None, TOY_CONFIG)
    with pytest.raises(ValueError, match="unknown dataset 'toy'"):
        build_dataset("toy", ".", "train")


def test_a_toy_row_reaches_config_build_and_cli(toy_rows: Path, capsys: pytest.CaptureFixture) -> None:
    from lfi.cli import main
    from lfi.data.build import build_dataset
    from lfi.show.report import teacher_label
    from lfi.store.shards import InteractionStore

    cfg = load_config(None, TOY_CONFIG)
    assert (cfg.data.dataset, cfg.teacher.name) == ("toy", "toy")
    with pytest.raises(
        ConfigError, match="'data.dataset' must be one of"
    ):  # classification only, as its row says
        load_config(None, [*TOY_CONFIG, "task=detection", "model.name=detr"])
    data = build_dataset("toy", toy_rows, "val")
    assert (type(data).__name__, data.split, len(data)) == ("ToyDataset", "val", 3)
    assert teacher_label("toy") == "toy teacher (not the paper's LLaVA-1.5)"
    out = toy_rows / "store"
    argv = ["extract", "--teacher", "toy", "--dataset", "toy", "--data", str(toy_rows), "--out", str(out)]
    assert main([*argv, "--workers", "0", "--batch-size", "2"]) == 0
    assert len(InteractionStore(out)) == 3


def test_catalog_is_the_only_list() -> None:
    """The CLI's choices and the registry's names are the catalog's rows."""
    from lfi.cli import build_parser
    from lfi.extract.teacher import available_teachers

    assert set(catalog.teacher_names(buildable=True)) <= set(available_teachers())
    extract = build_parser()._subparsers._group_actions[0].choices["extract"]
    choices = {a.dest: a.choices for a in extract._actions if a.choices}
    assert tuple(choices["teacher"]) == catalog.teacher_names(buildable=True)
    assert tuple(choices["dataset"]) == catalog.dataset_names(buildable=True)
    assert "synthetic" not in choices["dataset"] and "none" not in choices["teacher"]
