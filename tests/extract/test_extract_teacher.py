"""Teacher interface: registry, output validation, Eq. 11 + empty policy."""

from __future__ import annotations

import pytest
import torch

from lfi.extract.oracle import OracleTeacher
from lfi.extract.teacher import (
    EmptyMapError,
    Teacher,
    TeacherOutput,
    apply_contrast,
    available_teachers,
    build_teacher,
    register_teacher,
)


def test_builtin_names_and_lazy_build() -> None:
    assert {"oracle", "vit", "llava"} <= set(available_teachers())
    teacher = build_teacher("oracle", grid=(7, 7))
    assert isinstance(teacher, OracleTeacher) and teacher.grid == (7, 7)
    assert teacher.metadata()["teacher"] == "oracle"


def test_unknown_teacher_lists_available() -> None:
    with pytest.raises(KeyError, match="oracle"):
        build_teacher("no-such-teacher")


def test_user_teacher_registers() -> None:
    class Constant(Teacher):
        name = "constant-test"
        grid = (2, 2)

        def __call__(self, batch):  # noqa: ANN001, ANN204
            fore = torch.ones(len(batch), 2, 2)
            return TeacherOutput(fore=fore, back=torch.zeros_like(fore))

    register_teacher("constant-test")(Constant)
    out = build_teacher("constant-test")([{}, {}])
    assert out.fore.shape == (2, 2, 2) and out.info == [{}, {}]


def test_teacher_output_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="fore and back"):
        TeacherOutput(fore=torch.zeros(2, 3, 3), back=torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="info"):
        TeacherOutput(fore=torch.zeros(2, 3, 3), back=torch.zeros(2, 3, 3), info=[{}])


def test_contrast_is_eq11() -> None:
    fore = torch.tensor([[[0.5, 0.3], [0.2, 0.0]]])
    back = torch.full((1, 2, 2), 0.25)
    c = apply_contrast(fore, back, "skip", ["k"])
    torch.testing.assert_close(c.maps, torch.tensor([[[0.25 / 0.30, 0.05 / 0.30], [0.0, 0.0]]]))
    assert c.valid.tolist() == [True] and c.empty.tolist() == [False]


def test_all_negative_difference_is_counted_never_nan() -> None:
    fore = torch.zeros(3, 2, 2)
    fore[1, 0, 0] = 1.0
    back = torch.full((3, 2, 2), 0.5)  # beats fore everywhere for images 0 and 2
    c = apply_contrast(fore, back, "skip", ["a", "b", "c"])
    assert c.empty.tolist() == [True, False, True]
    assert torch.isfinite(c.maps).all()
    with pytest.raises(EmptyMapError, match=r"\['a', 'c'\]"):
        apply_contrast(fore, back, "error", ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty policy"):
        apply_contrast(fore, back, "random", ["a", "b", "c"])  # type: ignore[arg-type]
