"""Figures of lfi.show build from small inputs and write non-empty PNG and PDF files; convergence curves come
from run folders (`lfi.train.runs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from lfi.cli.show import register
from lfi.show.curves import convergence_figure, epochs_to_reach, read_curves, run_curve, speedup
from lfi.show.human import human_alignment_figure
from lfi.show.maps import interaction_figure, interaction_grid, select_map
from lfi.train.runs import load_run
from tests.show.conftest import write_run


def _written(path: Path) -> None:
    for suffix in (".png", ".pdf"):
        assert path.with_suffix(suffix).stat().st_size > 1000, suffix


def test_select_map_averages_layers_or_picks() -> None:
    m = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)  # (layers, heads, h, w)
    assert torch.equal(select_map(m[:, 0]), m[:, 0].mean(0))
    assert torch.equal(select_map(m[:, 0], layer=1), m[1, 0])
    assert torch.equal(select_map(m, layer=1, head=2), m[1, 2])
    flat = torch.rand(2, 2)
    assert select_map(flat, layer=5) is flat
    with pytest.raises(ValueError, match="C_AGT: head 3 out of range"):
        select_map(m, head=3, name="C_AGT")
    # the mean of per-head maps is not the student's map (issue 29): per-head maps need a head
    with pytest.raises(ValueError, match="per-head maps a head"):
        select_map(m, layer=0, name="C_F")
    with pytest.raises(ValueError, match="a head needs per-head maps"):
        select_map(m[:, 0], head=0, name="C_F")
    with pytest.raises(ValueError, match="C_F: expected"):
        select_map(torch.rand(1, 3, 2, 2, 2), name="C_F")


@pytest.fixture
def image_and_maps() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    image = (torch.rand(3, 48, 64) * 255).to(torch.uint8)
    layered = torch.rand(2, 3, 4)  # (layers, h, w)
    maps = {"C_VFM": layered, "C_VLM": torch.rand(3, 4), "C_AGT": layered.flip(-1), "C_F": layered}
    return image, maps, torch.rand(48, 64)


def test_interaction_figure_modes_write_png_and_pdf(tmp_path: Path, image_and_maps) -> None:
    image, maps, human = image_and_maps
    fig = interaction_figure(image, maps, human=human, path=tmp_path / "mean.png")
    assert len(fig.axes) == 6  # image, 4 maps, human
    _written(tmp_path / "mean")
    assert len(interaction_figure(image, maps, per="layer").axes) == 2 * 5
    per_head = {name: torch.rand(2, 3, 3, 4) if m.dim() == 3 else m for name, m in maps.items()}
    heads = interaction_figure(image.float() / 255, per_head, per="head", layer=0)
    assert [ax.get_ylabel() for ax in heads.axes[::5]] == [f"layer 0, head {i}" for i in range(3)]
    with pytest.raises(ValueError, match="per='head' needs per-head maps"):
        interaction_figure(image, maps, per="head")
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
    summary["C_VFM"]["cosine"] = (0.0, 0.0)  # a ratio to 0 is undefined: no "x" in the title
    assert "x)" not in human_alignment_figure(summary, title="t").get_suptitle()


def _run(root: Path, name: str, accs: list[float]) -> Path:
    config = {"experiment": name, "model": {"name": "vit_small_patch16_224", "variant": "vit"},
              "data": {"dataset": "tinyimagenet"}}  # fmt: skip
    return write_run(root, config, {"val": {"acc1": accs[-1], "n": 10}}, accs)


def test_curves_read_reach_speedup_and_plot(tmp_path: Path) -> None:
    vit, ivit = read_curves(
        [_run(tmp_path, "t/vit", [30, 50, 60, 70, 80]), _run(tmp_path, "t/ivit", [50, 80, 85, 90, 90])]
    )
    assert vit.label == "t/vit" and ivit.label == "t/ivit" and vit.epochs == (0, 1, 2, 3, 4)
    assert epochs_to_reach(vit, 80) == 5 and epochs_to_reach(ivit, 80) == 2
    assert epochs_to_reach(vit, 95) is None
    assert speedup(vit, ivit, 80) == pytest.approx(2.5)
    fig = convergence_figure([vit, ivit], threshold=80, path=tmp_path / "fig3")
    assert "2.50x faster" in fig.legends[0].get_texts()[1].get_text()
    _written(tmp_path / "fig3")
    with pytest.raises(KeyError, match=r"metrics.csv: no values in column 'val/acc5'"):
        run_curve(load_run(tmp_path / "t" / "ivit"), column="val/acc5")
    moved = tmp_path / "copies" / "seed1"
    moved.parent.mkdir()
    (tmp_path / "t" / "vit").rename(moved)
    assert run_curve(load_run(moved)).label == "seed1"  # the experiment name no longer names this folder


def test_curves_of_a_trained_run(trained_run: Path) -> None:
    curve = run_curve(load_run(trained_run))  # its validation metric, from the metrics.csv `train` wrote
    assert curve.label == "tiny" and curve.epochs == (0, 1) and all(0 <= v <= 100 for v in curve.values)


def test_curves_cli(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base, fast = _run(tmp_path, "vit", [30, 60, 80]), _run(tmp_path, "ivit", [80, 90, 90])
    args = parser.parse_args(
        ["curves", str(base), str(fast), "--threshold", "80", "--out", str(tmp_path / "c")]
    )
    assert args.func(args) == 0
    assert "ivit: 1 epochs to 80, 3.00x vs vit" in capsys.readouterr().out
    _written(tmp_path / "c")


def test_to_palette_makes_a_palette_png_and_is_idempotent(tmp_path: Path) -> None:
    from PIL import Image

    from lfi.show.save import to_palette

    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy()
    png = tmp_path / "x.png"
    Image.fromarray(rgb).save(png)
    to_palette(png)
    once = Image.open(png).convert("RGB").tobytes()
    assert Image.open(png).mode == "P" and Image.open(png).size == (48, 40)
    to_palette(png)  # a second pass keeps every pixel's colour
    assert Image.open(png).convert("RGB").tobytes() == once


def test_many_runs_legend_below_short_runs_marked(tmp_path: Path) -> None:
    """Issue 33 item 6: the legend sits below the plot (it no longer squeezes it), a one-epoch run is drawn as
    a visible marker, long runs as lines."""
    runs = [_run(tmp_path, f"t/long_experiment_name_{i}", [30.0 + i, 50.0, 60.0, 70.0] * 3) for i in range(5)]
    runs.append(_run(tmp_path, "t/one_epoch", [42.0]))
    fig = convergence_figure(read_curves(runs), threshold=55.0)
    assert not fig.axes[0].get_legend() and len(fig.legends) == 1
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # constrained layout places the legend at draw time
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend, axes = fig.legends[0].get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert legend.y1 <= axes.y0  # below the axes, not over them
    assert axes.width > 0.7 * fig.bbox.width  # the plot keeps the figure's width
    lines = {
        line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")
    }
    one = next(line for label, line in lines.items() if label.startswith("t/one_epoch"))
    assert one.get_marker() == "o" and list(one.get_xdata()) == [1]
    long = next(line for label, line in lines.items() if label.startswith("t/long_experiment_name_0"))
    assert long.get_marker() in (None, "None", "")


def test_two_reports_in_one_folder_keep_their_own_figures(tmp_path: Path) -> None:
    from lfi.show.report import build_report

    a, b = _run(tmp_path, "t/a", [30.0, 50.0]), _run(tmp_path, "t/b", [40.0, 60.0])
    first = build_report([a], tmp_path / "out" / "first.md")
    second = build_report([b], tmp_path / "out" / "second.md")
    assert "(figures/first_table2_convergence.png)" in first
    assert "(figures/second_table2_convergence.png)" in second
    figures = tmp_path / "out" / "figures"
    assert {p.name for p in figures.glob("*.png")} == {
        "first_table2_convergence.png",
        "second_table2_convergence.png",
    }
