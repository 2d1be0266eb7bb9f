"""Human-alignment metrics against independent float64 numpy references on hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lfi.evaluate.human import (
    AlignmentTable,
    common_grid,
    compare_to_human,
    cosine_similarity,
    nss,
    pearson_cc,
    score_ratio,
)


def cos_ref(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def cc_ref(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def nss_ref(pred: np.ndarray, fix: np.ndarray) -> float:
    p = pred.astype(np.float64)
    z = (p - p.mean()) / p.std()
    return float(z[fix.astype(bool)].mean())


@pytest.fixture
def maps() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 9)), rng.random((6, 9))
    return a / a.sum(), b / b.sum()


def test_metrics_match_numpy_references(maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = maps
    fix = np.zeros((6, 9), dtype=bool)
    fix[[0, 2, 5], [1, 4, 8]] = True
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    assert cosine_similarity(ta, tb).item() == pytest.approx(cos_ref(a, b), abs=1e-6)
    assert pearson_cc(ta, tb).item() == pytest.approx(cc_ref(a, b), abs=1e-6)
    assert nss(ta, torch.from_numpy(fix)).item() == pytest.approx(nss_ref(a, fix), abs=1e-5)


def test_batched_metrics_are_per_image(maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = maps
    batch_a = torch.from_numpy(np.stack([a, b]))
    batch_b = torch.from_numpy(np.stack([b, b]))
    out = pearson_cc(batch_a, batch_b)
    assert out.shape == (2,) and out.dtype == torch.float64
    assert out[0].item() == pytest.approx(cc_ref(a, b)) and out[1].item() == pytest.approx(1.0)


def test_self_inverse_and_uniform(maps: tuple[np.ndarray, np.ndarray]) -> None:
    a = torch.from_numpy(maps[0])
    inverse = a.max() - a
    uniform = torch.full_like(a, 1 / a.numel())
    assert cosine_similarity(a, a).item() == pytest.approx(1.0)
    assert pearson_cc(a, a).item() == pytest.approx(1.0)
    assert pearson_cc(a, inverse).item() == pytest.approx(-1.0)
    assert cosine_similarity(a, uniform).item() == pytest.approx(cos_ref(maps[0], uniform.numpy()))
    # CC with a constant map is undefined (0/0): reported as 0, never NaN.
    assert pearson_cc(a, uniform).item() == 0.0
    assert nss(uniform, torch.ones_like(a, dtype=torch.bool)).item() == 0.0
    assert cosine_similarity(a, torch.zeros_like(a)).item() == 0.0


def test_nss_sign_follows_the_peak() -> None:
    pred = torch.zeros(5, 5)
    pred[1, 3] = 1.0
    at_peak = torch.zeros(5, 5, dtype=torch.bool)
    at_peak[1, 3] = True
    elsewhere = torch.zeros(5, 5, dtype=torch.bool)
    elsewhere[4, 0] = True
    assert nss(pred, at_peak).item() == pytest.approx(nss_ref(pred.numpy(), at_peak.numpy()))
    assert nss(pred, at_peak).item() > 0 > nss(pred, elsewhere).item()


def test_nss_without_fixations_is_an_error() -> None:
    with pytest.raises(ValueError, match="no fixated location"):
        nss(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))


def test_resampled_uniform_map_scores_exactly_zero() -> None:
    human = torch.rand(2, 60, 80)
    fixations = torch.rand(2, 60, 80) > 0.95
    table = compare_to_human({"uniform": torch.full((2, 14, 14), 1 / 196)}, human, fixations)
    assert table.scores["uniform"]["cc"].tolist() == [0.0, 0.0]
    assert table.scores["uniform"]["nss"].tolist() == [0.0, 0.0]


def test_both_grid_policies_score_a_map_equal_to_the_human_map_as_perfect() -> None:
    human = torch.zeros(1, 28, 28)
    human[0, 4:12, 14:24] = 1.0
    human = human / human.sum()
    fixations = human > 0
    coarse = torch.nn.functional.avg_pool2d(human, 2)  # (1, 14, 14): the human map on the model grid
    for policy in ("to_model", "to_human"):
        scores = compare_to_human({"m": coarse}, human, fixations, resample=policy).scores["m"]
        assert scores["cc"].item() > (0.999 if policy == "to_model" else 0.9), policy
        assert scores["nss"].item() > 0
    pred, _, votes = common_grid(coarse, human, fixations, "to_model")
    assert pred.shape == votes.shape == (1, 14, 14)
    with pytest.raises(ValueError, match="resample"):
        common_grid(coarse, human, fixations, "nearest")  # type: ignore[arg-type]


def test_compare_to_human_names_a_map_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="'C_AGT'"):
        compare_to_human(
            {"C_AGT": torch.rand(3, 4, 4)}, torch.rand(2, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool)
        )


def test_table_summary_ratio_markdown_csv_and_concat(tmp_path) -> None:
    def part(agt: list[float], vfm: list[float]) -> AlignmentTable:
        def col(v: list[float]) -> dict[str, torch.Tensor]:
            return {m: torch.tensor(v, dtype=torch.float64) for m in ("cosine", "cc", "nss")}

        return AlignmentTable({"C_VFM": col(vfm), "C_AGT": col(agt)})

    table = AlignmentTable.concat([part([0.5], [0.2]), part([0.58], [0.2])])
    mean, std = table.summary()["C_AGT"]["cosine"]
    assert mean == pytest.approx(0.54) and std == pytest.approx(np.std([0.5, 0.58], ddof=1))
    assert table.ratio() == pytest.approx(2.7)
    text = str(table)
    assert "| C_AGT | 0.5400 ± 0.0566" in text and "C_AGT / C_VFM: cosine 2.70x" in text
    assert math.isnan(part([0.5], [0.0]).ratio())
    # a negative denominator gives no "times closer": -0.5 / -0.25 is not 2x, it is undefined
    negative = part([-0.5], [-0.25])
    assert math.isnan(negative.ratio()) and math.isnan(negative.ratio(metric="cc"))
    assert "C_AGT / C_VFM: cosine undefined (C_VFM's mean <= 0)" in negative.to_markdown()
    assert text.count("C_AGT / C_VFM") == 1
    lines = table.write_csv(tmp_path / "human.csv").read_text().splitlines()
    assert lines[0].startswith("map,cosine_mean,cosine_std") and lines[2].startswith("C_AGT,0.540000")
    with pytest.raises(KeyError, match="C_VLM"):
        table.ratio(num="C_VLM")


def test_score_ratio_is_defined_only_over_a_positive_denominator() -> None:
    assert score_ratio(0.54, 0.2) == pytest.approx(2.7)
    assert score_ratio(-0.1, 0.2) == pytest.approx(-0.5)  # a negative numerator is still a number
    assert all(math.isnan(score_ratio(0.5, d)) for d in (0.0, -0.2, -1e-12))
