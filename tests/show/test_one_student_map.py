"""Issue 29: the map scored against humans is the map that was trained. Two heads with class-token rows
[0.8, 0.1, 0.1] and [0, 0.9, 0.1] (prefix token first) give [0.83, 0.17] (heads averaged, prefix dropped,
renormalised: `lfi.maps.attention_to_grid`) in the training loss input, the figures, TensorBoard and
`eval-human` alike; a second road (renormalise each head, then average) gave [0.70, 0.30]."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

import lfi
import lfi.evaluate.maps
import lfi.show.maps
from lfi.evaluate.human import Student, map_function, student_map_function
from lfi.evaluate.maps import run_maps
from lfi.models.ivit import InteractionOutput
from lfi.show.tensorboard import LogInteractionMaps
from lfi.show.viz import run_viz
from lfi.train.tasks import ClassificationTask

ROWS = torch.tensor([[0.8, 0.1, 0.1], [0.0, 0.9, 0.1]])  # (heads, N): the class token, then 2 patches
TRAINED = torch.tensor([[5 / 6, 1 / 6]])  # (1, 2): mean over heads [0.4, 0.5, 0.1] -> [0.5, 0.1] / 0.6


def two_head_student() -> lfi.InteractionViT:
    """A 2-head I-ViT on a (1, 2) patch grid whose every attention map is `ROWS` (any input size), so
    that each consumer's map can be checked against the hand-computed one."""
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=(8, 16),
        patch_size=8,
        embed_dim=8,
        depth=2,
        num_heads=2,
        num_classes=2,
    )
    ivit = lfi.interactionize(vit).eval()

    def forward(x, request=None, layers=None):
        logits = torch.zeros(len(x), 2)
        if request is None:
            return logits
        rows = ROWS[None, :, None].expand(len(x), -1, request.rows or 3, -1)  # (B, H, R, N)
        if request.rows is None:  # full maps: every query row is the same row
            rows = rows.expand(len(x), 2, 3, 3)
        chosen = layers if layers is not None else ivit.converted
        return InteractionOutput(logits, {i: {n: rows for n in request.names} for i in chosen})

    ivit.forward = forward
    ivit.patch_grid = lambda image_size: (1, 2)
    return ivit


def images(n: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 16), dtype=torch.uint8)


def assert_trained(m: torch.Tensor) -> None:
    """m: (..., 1, 2) maps; each must be the trained map."""
    torch.testing.assert_close(m.float(), TRAINED.expand_as(m), atol=1e-6, rtol=0)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The maps the figures overlay on their images, in drawing order."""
    seen: list[torch.Tensor] = []
    overlay = lfi.show.maps._overlay

    def record(ax, image, m):
        if m is not None:
            seen.append(m.detach().clone())
        overlay(ax, image, m)

    monkeypatch.setattr(lfi.show.maps, "_overlay", record)
    return seen


def test_training_loss_input_is_the_trained_map() -> None:
    maps = ClassificationTask().forward(two_head_student(), {"image": torch.zeros(2, 3, 8, 16)})["maps"]
    assert maps.shape == (1, 2, 1, 2)  # (alignment layers, B, gh, gw)
    assert_trained(maps)


def test_figure_draws_the_trained_map(tmp_path: Path, monkeypatch, drawn) -> None:
    ivit = two_head_student()
    cfg = SimpleNamespace(
        data=SimpleNamespace(img_size=16), teacher=SimpleNamespace(name="oracle", store=None),
        model=SimpleNamespace(name="tiny", variant="iq_ic_gc"),
    )  # fmt: skip
    monkeypatch.setattr(lfi.evaluate.maps, "load_trained", lambda run_dir: (ivit, SimpleNamespace(cfg=cfg)))
    path = tmp_path / "a.png"
    Image.fromarray(images(1)[0].permute(1, 2, 0).numpy()).save(path)
    for per in ("mean", "layer"):
        drawn.clear()
        run_viz(run_maps(tmp_path, [path], teacher="none"), tmp_path / f"fig_{per}.png", per=per)
        assert len(drawn) == (3 if per == "mean" else 2 * 3)  # C_VFM, C_AGT, C_F (per layer)
        for m in drawn:
            assert_trained(m)


def test_tensorboard_draws_the_trained_map(tmp_path: Path, drawn) -> None:
    ivit = two_head_student()
    callback = LogInteractionMaps(num_images=2)
    callback.images = torch.zeros(2, 3, 8, 16)
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=0,
        loggers=[TensorBoardLogger(tmp_path)],
    )  # fmt: skip
    callback.on_validation_epoch_end(trainer, SimpleNamespace(model=ivit, device="cpu"))
    assert len(drawn) == 2 * 3  # 2 images x (C_VFM, C_AGT, C_F)
    for m in drawn:
        assert_trained(m)


def test_eval_human_scores_the_trained_map() -> None:
    student = Student(two_head_student(), 16, "two heads")
    per_layer = student_map_function(student)(images())
    assert set(per_layer) == {"C_VFM", "C_AGT", "C_F"} | {
        f"{n}@L{k}" for n in ("C_VFM", "C_AGT", "C_F") for k in (0, 1)
    }
    for m in per_layer.values():
        assert_trained(m)
    for m in map_function(student, "none")(images()).values():
        assert_trained(m)
