"""Figures of lfi.show build from small inputs and write non-empty PNG and PDF files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from lfi.show.curves import convergence_figure, epochs_to_reach, read_curve, register, speedup
from lfi.show.human import human_alignment_figure
from lfi.show.maps import class_token_map, interaction_figure, interaction_grid, select_map


def _written(path: Path) -> None:
    for suffix in (".png", ".pdf"):
        assert path.with_suffix(suffix).stat().st_size > 1000, suffix


def test_class_token_map_drops_prefix_tokens_in_row_major_order() -> None:
    attn = torch.zeros(2, 3, 7, 7)  # (B, heads, N, N): 1 class token + a 2x3 patch grid
    attn[..., 0, 1 + 4] = 3.0  # patch token 4 -> row 1, column 1
    attn[..., 0, 0] = 5.0  # the class token's own weight is dropped
    m = class_token_map(attn, (2, 3))
    assert m.shape == (2, 3, 2, 3) and m[0, 0, 1, 1] == 1.0 and m.sum() == 6.0
    row = attn[:, :, :1]  # class-token rows (B, heads, 1, N)
    assert torch.equal(class_token_map(row, (2, 3)), m)
    with pytest.raises(ValueError, match="expected num_prefix"):
        class_token_map(attn, (3, 3))


def test_select_map_averages_or_picks() -> None:
    m = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(select_map(m), m.mean((0, 1)))
    assert torch.equal(select_map(m, layer=1, head=2), m[1, 2])
    assert torch.equal(select_map(m, layer=0), m[0].mean(0))
    flat = torch.rand(2, 2)
    assert select_map(flat, layer=5) is flat
    with pytest.raises(ValueError, match="C_AGT: head 3 out of range"):
        select_map(m, head=3, name="C_AGT")
    with pytest.raises(ValueError, match="C_F: expected"):
        select_map(torch.rand(3, 2, 2), name="C_F")


@pytest.fixture
def image_and_maps() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    image = (torch.rand(3, 48, 64) * 255).to(torch.uint8)
    layered = torch.rand(2, 3, 3, 4)  # (layers, heads, h, w)
    maps = {"C_VFM": layered, "C_VLM": torch.rand(3, 4), "C_AGT": layered.flip(-1), "C_F": layered}
    return image, maps, torch.rand(48, 64)


def test_interaction_figure_modes_write_png_and_pdf(tmp_path: Path, image_and_maps) -> None:
    image, maps, human = image_and_maps
    fig = interaction_figure(image, maps, human=human, path=tmp_path / "mean.png")
    assert len(fig.axes) == 6  # image, 4 maps, human
    _written(tmp_path / "mean")
    assert len(interaction_figure(image, maps, per="layer").axes) == 2 * 5
    heads = interaction_figure(image.float() / 255, maps, per="head", layer=0)
    assert [ax.get_ylabel() for ax in heads.axes[::5]] == [f"layer 0, head {i}" for i in range(3)]
    with pytest.raises(ValueError, match="per must be"):
        interaction_figure(image, maps, per="token")  # type: ignore[arg-type]


def test_interaction_grid_one_row_per_image(tmp_path: Path, image_and_maps) -> None:
    image, maps, human = image_and_maps
    fig = interaction_grid(
        [image, image], [maps, maps], [human, None], labels=["a", "b"], path=tmp_path / "g"
    )
    assert [ax.get_ylabel() for ax in fig.axes[::6]] == ["a", "b"]
    assert [ax.get_title() for ax in fig.axes[:6]] == ["image", "C_VFM", "C_VLM", "C_AGT", "C_F", "human"]
    _written(tmp_path / "g")


def test_human_alignment_figure(tmp_path: Path) -> None:
    summary = {
        "C_VFM": {"cosine": (0.2, 0.05), "cc": (0.1, 0.04), "nss": (0.3, 0.2)},
        "C_AGT": {"cosine": (0.54, 0.07), "cc": (-0.05, 0.1), "nss": (1.2, 0.4)},
    }
    fig = human_alignment_figure(summary, path=tmp_path / "fig6")
    assert len(fig.axes) == 3 and "2.70x" in fig.get_suptitle()
    _written(tmp_path / "fig6")
    with pytest.raises(KeyError, match="'C_VFM' has no"):
        human_alignment_figure({"C_VFM": {"cosine": (0.2, 0.0)}})


def _lightning_csv(path: Path, accs: list[float]) -> Path:
    """A CSVLogger-style file: train rows without val/acc1 interleaved with one val row per epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,train/loss,val/acc1"]
    for epoch, acc in enumerate(accs):
        lines += [f"{epoch},{10 * epoch + 4},0.9,", f"{epoch},{10 * epoch + 9},,{acc}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curves_read_reach_speedup_and_plot(tmp_path: Path) -> None:
    vit = read_curve(
        _lightning_csv(tmp_path / "vit" / "version_0" / "metrics.csv", [0.3, 0.5, 0.6, 0.7, 0.8])
    )
    ivit = read_curve(_lightning_csv(tmp_path / "ivit" / "metrics.csv", [0.5, 0.8, 0.85, 0.9, 0.9]))
    assert vit.label == "vit" and ivit.label == "ivit" and vit.epochs == (0, 1, 2, 3, 4)
    assert epochs_to_reach(vit, 0.8) == 5 and epochs_to_reach(ivit, 0.8) == 2
    assert epochs_to_reach(vit, 0.95) is None
    assert speedup(vit, ivit, 0.8) == pytest.approx(2.5)
    fig = convergence_figure([vit, ivit], threshold=0.8, path=tmp_path / "fig3")
    assert "2.50x faster" in fig.axes[0].get_legend().get_texts()[1].get_text()
    _written(tmp_path / "fig3")
    with pytest.raises(KeyError, match="no column 'val/acc5'"):
        read_curve(tmp_path / "ivit" / "metrics.csv", column="val/acc5")


def test_curves_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = _lightning_csv(tmp_path / "vit" / "metrics.csv", [0.3, 0.6, 0.8])
    fast = _lightning_csv(tmp_path / "ivit" / "metrics.csv", [0.8, 0.9, 0.9])
    args = parser.parse_args(
        ["curves", str(base), str(fast), "--threshold", "0.8", "--out", str(tmp_path / "c")]
    )
    args.func(args)
    assert "ivit: 1 epochs to 0.8, 3.00x vs vit" in capsys.readouterr().out
    _written(tmp_path / "c")
