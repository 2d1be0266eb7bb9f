"""Human-alignment metrics against independent float64 numpy references on hand-made maps."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from lfi.maps import centre_bias
from lfi.metrics.human import (
    METRICS,
    AlignmentTable,
    aggregate,
    auc_judd,
    common_grid,
    compare_to_human,
    cosine_similarity,
    downsample_human,
    evaluate_many,
    layer_name,
    layer_ratios,
    nss,
    pearson_cc,
    score_maps,
    score_ratio,
    split_layer,
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


def auc_judd_ref(sal: np.ndarray, fix: np.ndarray) -> float:
    """The MIT saliency benchmark's AUC_Judd.m, line by line (no jitter: use maps without ties)."""
    s, f = sal.ravel().astype(np.float64), fix.ravel().astype(bool)
    n_fix, n_pix = int(f.sum()), s.size
    thresholds = np.sort(s[f])[::-1]
    tp, fp = np.zeros(n_fix + 2), np.zeros(n_fix + 2)
    tp[-1] = fp[-1] = 1.0
    for i, t in enumerate(thresholds, start=1):
        above = int((s >= t).sum())
        tp[i] = i / n_fix
        fp[i] = (above - i) / (n_pix - n_fix)
    return float(np.trapezoid(tp, fp))


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
    # random values have no ties, so the benchmark's own loop applies as written
    assert auc_judd(torch.from_numpy(a), torch.from_numpy(fix)).item() == pytest.approx(auc_judd_ref(a, fix))


def test_auc_judd_hand_computed() -> None:
    fix = torch.zeros(4, 5, dtype=torch.bool)
    fix[1, 2] = fix[3, 0] = True
    # a perfect map: every fixation above every other location
    assert auc_judd(fix.float(), fix).item() == 1.0
    # its negation: both fixations tie below all 18 others; the curve goes (0,0) -> (1, 1/2) -> (1, 1): 1/4
    assert auc_judd(-fix.float(), fix).item() == pytest.approx(0.25)
    # 20 distinct values, the 3 fixations at the 3 lowest: first point (1, 1/3), area 1/6 = 1 / (2k)
    ramp = torch.arange(20.0).reshape(4, 5)
    low = torch.zeros(4, 5, dtype=torch.bool)
    low.view(-1)[[0, 1, 2]] = True
    assert auc_judd(ramp, low).item() == pytest.approx(1 / 6)
    assert auc_judd(-ramp, low).item() == 1.0
    # fixations at ranks 1 and 3 of 20 (descending): points (0, 1/2), (1/18, 1): 1/18 * 3/4 + 17/18 = 71/72
    mixed = torch.zeros(4, 5, dtype=torch.bool)
    mixed.view(-1)[[19, 17]] = True
    assert auc_judd(ramp, mixed).item() == pytest.approx(71 / 72)
    assert auc_judd(ramp, mixed).item() == pytest.approx(auc_judd_ref(ramp.numpy(), mixed.numpy()))
    # a constant map is chance, and so is a map with no unfixated location; no fixation is an error
    assert auc_judd(torch.ones(4, 5), fix).item() == 0.5
    assert auc_judd(ramp, torch.ones(4, 5, dtype=torch.bool)).item() == 0.5
    with pytest.raises(ValueError, match="no fixated location"):
        auc_judd(ramp, torch.zeros(4, 5, dtype=torch.bool))


def test_auc_judd_weights_and_batches() -> None:
    ramp = torch.arange(20.0).reshape(4, 5)
    votes = torch.zeros(4, 5)
    votes.view(-1)[19], votes.view(-1)[0] = 3.0, 1.0  # 3 fixations at the top, 1 at the bottom
    # points (0, 3/4), (1, 1): area 3/4 + 1/8
    assert auc_judd(ramp, votes).item() == pytest.approx(7 / 8)
    both = auc_judd(torch.stack([ramp, -ramp]), torch.stack([votes, votes]))
    assert both.shape == (2,) and both[0].item() == pytest.approx(7 / 8)
    assert both[1].item() == pytest.approx(5 / 8)  # (0, 1/4), then straight to (1, 1)


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


def test_nss_and_cc_hand_computed() -> None:
    peak = torch.zeros(5, 5)
    peak[2, 2] = 1.0
    at_peak = peak > 0
    # mean 1/25, population std sqrt(1/25 * 24/25): the peak is (24/25) / (sqrt(24)/25) = sqrt(24) std above
    assert nss(peak, at_peak).item() == pytest.approx(math.sqrt(24))
    # the other 24 cells lie 1/sqrt(24) std below the mean
    assert nss(peak, ~at_peak).item() == pytest.approx(-1 / math.sqrt(24))
    assert pearson_cc(peak, peak).item() == pytest.approx(1.0)
    assert pearson_cc(peak, 3 * peak + 1).item() == pytest.approx(1.0)  # invariant to scale and offset
    assert pearson_cc(peak, -peak).item() == pytest.approx(-1.0)


def test_centre_bias_is_a_centred_normalised_gaussian() -> None:
    c = centre_bias((6, 8), sigma=0.25)
    assert c.shape == (6, 8) and c.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(c, c.flip(0)), torch.testing.assert_close(c, c.flip(1))
    # cells (2, 3) and (3, 4) are the 4 central ones; a corner cell is (2.5/6 / 0.25)^2 + (3.5/8 / 0.25)^2 away
    assert c[2, 3].item() == c.max().item()
    d2 = (2.5 / 6 / 0.25) ** 2 + (3.5 / 8 / 0.25) ** 2 - ((0.5 / 6 / 0.25) ** 2 + (0.5 / 8 / 0.25) ** 2)
    assert (c[0, 0] / c[2, 3]).item() == pytest.approx(math.exp(-0.5 * d2), rel=1e-5)
    fix = torch.zeros(6, 8, dtype=torch.bool)
    fix[2:4, 3:5] = True  # people look at the centre: the centre bias is near perfect there
    assert auc_judd(c, fix).item() == 1.0 and nss(c, fix).item() > 1.0


def test_downsample_human_keeps_mass_and_counts_every_fixated_pixel() -> None:
    human = torch.rand(2, 60, 80)
    human = human / human.sum((1, 2), keepdim=True)
    fix = torch.zeros(2, 60, 80, dtype=torch.bool)
    fix[0, 0, 0] = fix[0, 1, 1] = fix[0, 59, 79] = True  # two in the top-left 4x4 cell, one in the last
    fix[1, 30, 40] = True
    small, votes = downsample_human(human, fix, 20)
    assert small.shape == votes.shape == (2, 15, 20)
    torch.testing.assert_close(small.sum((1, 2)), torch.ones(2))
    assert votes[0, 0, 0].item() == pytest.approx(2 / 16) and votes[0, -1, -1].item() == pytest.approx(1 / 16)
    # NSS of a map constant within the cells is the same at both resolutions
    coarse = torch.rand(2, 15, 20)
    fine = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    torch.testing.assert_close(nss(coarse, votes), nss(fine, fix))
    assert downsample_human(human, fix, 80)[1] is fix  # already small enough: unchanged


def test_evaluate_many_scores_several_sources_in_one_pass() -> None:
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(3):
        human = torch.rand(12, 16, generator=g)
        fix = torch.zeros(12, 16, dtype=torch.bool)
        fix[3 + i, 5] = fix[8, 2 * i] = True
        image = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=g)
        samples.append(
            {"image": image, "human_map": human / human.sum(), "fixations": fix, "name": f"{i}.jpg"}
        )
    seen: list[str] = []

    def a(images: torch.Tensor, batch: list) -> dict[str, torch.Tensor]:
        seen.extend(s["name"] for s in batch)
        return {"m": images.float().mean(1)}

    def b(images: torch.Tensor, batch: list) -> dict[str, torch.Tensor]:
        return {"centre": centre_bias((4, 4)).expand(len(images), 4, 4)}

    tables = evaluate_many(samples, {"a": a, "b": b}, batch_size=2)
    assert seen == ["0.jpg", "1.jpg", "2.jpg"] and tables["a"].images == tables["b"].images == 3
    one = compare_to_human(
        {"m": torch.stack([s["image"] for s in samples]).float().mean(1)},
        torch.stack([s["human_map"] for s in samples]),
        torch.stack([s["fixations"] for s in samples]),
    )
    for metric in ("cosine", "cc", "nss", "auc_judd"):
        torch.testing.assert_close(tables["a"].scores["m"][metric], one.scores["m"][metric])


def _table(values: dict[str, list[float]]) -> AlignmentTable:
    return AlignmentTable(
        {
            n: {m: torch.tensor(v, dtype=torch.float64) for m in ("cosine", "cc", "nss")}
            for n, v in values.items()
        }
    )


def test_layer_names_aggregate_and_per_layer_ratios_over_runs() -> None:
    assert layer_name("C_AGT", 6) == "C_AGT@L6" and split_layer("C_AGT@L6") == ("C_AGT", 6)
    assert split_layer("C_VLM (store)") == ("C_VLM (store)", None)
    seed0 = _table({"C_VFM": [0.1, 0.3], "C_AGT": [0.4, 0.6], "C_VFM@L1": [0.2, 0.2], "C_AGT@L1": [0.4, 0.4]})
    seed1 = _table({"C_VFM": [0.2, 0.2], "C_AGT": [0.6, 0.6], "C_VFM@L1": [0.1, 0.1], "C_AGT@L1": [0.4, 0.4]})
    one = aggregate([seed0])["C_AGT"]["cosine"]  # over images
    assert one["mean"] == pytest.approx(0.5) and one["std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert one["n"] == 2
    two = aggregate([seed0, seed1])["C_AGT"]["cosine"]  # over runs: run means 0.5 and 0.6
    assert two["mean"] == pytest.approx(0.55) and two["std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    ratios = layer_ratios([seed0, seed1])
    assert list(ratios) == ["mean", "L1"]
    # mean maps: 0.5 / 0.2 = 2.5 and 0.6 / 0.2 = 3; layer 1: 2 and 4
    assert ratios["mean"]["cosine"]["runs"] == pytest.approx([2.5, 3.0])
    assert ratios["mean"]["cosine"]["mean"] == pytest.approx(2.75)
    assert ratios["L1"]["cosine"]["mean"] == pytest.approx(3.0)
    assert ratios["L1"]["cosine"]["std"] == pytest.approx(math.sqrt(2))
    assert layer_ratios([seed0])["L1"]["cc"] == {"mean": 2.0, "std": None, "n": 1, "runs": [2.0]}
    # a run whose C_VFM mean is <= 0 has no ratio: left out of the mean, None in the list
    bad = _table({"C_VFM": [0.0, 0.0], "C_AGT": [0.4, 0.6], "C_VFM@L1": [0.2, 0.2], "C_AGT@L1": [0.4, 0.4]})
    r = layer_ratios([seed0, bad])["mean"]["cosine"]
    assert r["runs"] == [2.5, None] and r["mean"] == 2.5 and r["n"] == 1
    with pytest.raises(ValueError, match="different maps"):
        aggregate([seed0, _table({"C_VFM": [0.1], "C_AGT": [0.2]})])


LAYER_METRICS = ("cosine", "cc", "nss")


@pytest.mark.parametrize("resample", ["to_human", "to_model"])
def test_score_maps_scores_per_layer_maps_on_layer_metrics_only(resample: str) -> None:
    g = torch.Generator().manual_seed(1)
    pred, human = torch.rand(2, 6, 8, generator=g), torch.rand(2, 12, 16, generator=g)
    fix = torch.rand(2, 12, 16, generator=g) > 0.7
    fix[:, 0, 0], fix[:, 0, 1] = True, False
    maps = {"C_AGT": pred, layer_name("C_AGT", 3): pred}
    scores = score_maps(maps, human, fix, resample, layer_metrics=LAYER_METRICS)
    assert list(scores["C_AGT@L3"]) == list(LAYER_METRICS) and list(scores["C_AGT"]) == list(METRICS)
    for m in LAYER_METRICS:  # the same tensor scores the same under either name
        torch.testing.assert_close(scores["C_AGT@L3"][m], scores["C_AGT"][m], rtol=0, atol=0)
    assert list(score_maps(maps, human, fix, resample)["C_AGT@L3"]) == list(METRICS)  # default: all
    with pytest.raises(ValueError, match="nss_typo"):
        score_maps(maps, human, fix, resample, layer_metrics=("cosine", "nss_typo"))


def test_evaluate_many_with_layer_metrics_concat_aggregate_ratios_markdown_csv(tmp_path) -> None:
    g = torch.Generator().manual_seed(2)
    samples = []
    for _ in range(3):
        human, fix = torch.rand(12, 16, generator=g), torch.rand(12, 16, generator=g) > 0.7
        fix[0, 0], fix[0, 1] = True, False
        image = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=g)
        samples.append({"image": image, "human_map": human / human.sum(), "fixations": fix})

    def source(c: int):
        def maps(images: torch.Tensor, _batch: list) -> dict[str, torch.Tensor]:
            x = images.float()
            return {"C_VFM": x[:, c], "C_AGT": x.mean(1), "C_VFM@L1": x[:, c] ** 2, "C_AGT@L1": x[:, 2 - c]}

        return maps

    tables = evaluate_many(
        samples, {"a": source(0), "b": source(1)}, batch_size=2, layer_metrics=LAYER_METRICS
    )
    a = tables["a"]
    assert a.images == 3 and a.metrics == list(METRICS)
    assert list(a.scores["C_AGT@L1"]) == list(LAYER_METRICS) and list(a.scores["C_AGT"]) == list(METRICS)
    images = torch.stack([s["image"] for s in samples])
    whole = compare_to_human(
        source(0)(images, samples),
        torch.stack([s["human_map"] for s in samples]),
        torch.stack([s["fixations"] for s in samples]),
        layer_metrics=LAYER_METRICS,
    )
    for name, per in whole.scores.items():  # batches of 2 + 1 join into the one-pass scores
        assert list(a.scores[name]) == list(per)
        for m, v in per.items():
            torch.testing.assert_close(a.scores[name][m], v)
    agg = aggregate([a, tables["b"]])
    assert list(agg["C_AGT@L1"]) == list(LAYER_METRICS) and agg["C_AGT"]["auc_judd"]["n"] == 2
    ratios = layer_ratios([a, tables["b"]])
    assert list(ratios) == ["mean", "L1"] and list(ratios["L1"]) == list(LAYER_METRICS)
    assert len(ratios["L1"]["cosine"]["runs"]) == 2
    rows = {line.split(" | ")[0]: line for line in a.to_markdown().splitlines() if line.startswith("| C_")}
    assert rows["| C_AGT@L1"].endswith("| - | 3 |") and " - " not in rows["| C_AGT"]
    with a.write_csv(tmp_path / "h.csv").open() as fh:
        header, *body = list(csv.reader(fh))
    assert header[-3:] == ["auc_judd_mean", "auc_judd_std", "images"]
    got = {row[0]: row for row in body}
    assert got["C_AGT@L1"][-3:] == ["", "", "3"] and all(got["C_AGT"][1:])
