"""OSIE human attention maps (lfi.data.osie) and the human-alignment evaluation on real OSIE images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from lfi.data.osie import OSIE, fixation_maps, parse_fixations
from lfi.maps import centre_bias
from lfi.metrics.human import evaluate_human_alignment


def test_fixation_maps_place_1_based_points_and_weight_durations() -> None:
    points = np.array([[1.0, 1.0, 100.0], [10.2, 5.6, 300.0], [0.2, 3.0, 50.0], [99.0, 3.0, 50.0]])
    human, fixations = fixation_maps(points, (8, 12), sigma=0.0)
    # (1, 1) is the top-left pixel; (10.2, 5.6) rounds to column 9, row 5; the last two lie off the image.
    assert fixations.nonzero().tolist() == [[0, 0], [5, 9]]
    assert human[0, 0].item() == pytest.approx(0.5) and human.sum().item() == pytest.approx(1.0)
    weighted, _ = fixation_maps(points, (8, 12), sigma=0.0, duration_weighted=True)
    assert weighted[5, 9].item() == pytest.approx(0.75)
    blurred, _ = fixation_maps(points, (8, 12), sigma=2.0)
    assert blurred.sum().item() == pytest.approx(1.0) and (blurred > 0).sum() > 2
    assert blurred.dtype == torch.float32


def _mat(fixations: object) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"fixations": fixations})
    return buf.getvalue()


def test_parse_fixations_reads_the_osie_struct_and_names_bad_fields() -> None:
    subject = {
        "fix_x": np.array([3.0, 4.0]),
        "fix_y": np.array([5.0, 6.0]),
        "fix_duration": np.array([7.0, 8.0]),
    }
    entry = np.empty((1, 1), dtype=object)
    entry[0, 0] = {"img": "a.jpg", "subjects": np.array([subject, subject], dtype=object)}
    parsed = parse_fixations(_mat(entry))
    assert list(parsed) == ["a.jpg"] and parsed["a.jpg"].shape == (4, 3)
    assert parsed["a.jpg"][1].tolist() == [4.0, 6.0, 8.0]
    bad = np.empty((1, 1), dtype=object)
    bad[0, 0] = {"img": "b.jpg", "subjects": np.array([{"fix_x": np.array([1.0])}], dtype=object)}
    with pytest.raises(KeyError, match=r"x.mat: fixations\[0\].subjects\[0\] needs fields"):
        parse_fixations(_mat(bad), source="x.mat")


@pytest.mark.data
def test_osie_samples(shared_data: Path) -> None:
    dataset = OSIE(shared_data, names=["1001.jpg", "1002.jpg"])
    sample = dataset[1]
    assert sample["name"] == "1002.jpg"
    assert sample["image"].shape == (3, 600, 800) and sample["image"].dtype == torch.uint8
    assert sample["human_map"].shape == (600, 800) and sample["human_map"].dtype == torch.float32
    assert sample["human_map"].sum().item() == pytest.approx(1.0, abs=1e-4)
    assert sample["fixations"].dtype == torch.bool and 50 < sample["fixations"].sum() < 15 * 30
    # The blurred map is high where people looked: its mean at fixations is far above its mean overall.
    assert sample["human_map"][sample["fixations"]].mean() > 3 * sample["human_map"].mean()


@pytest.mark.data
def test_osie_errors_name_the_image(shared_data: Path) -> None:
    with pytest.raises(KeyError, match="no entry with img == 'missing.jpg'"):
        OSIE(shared_data, names=["missing.jpg"])
    with pytest.raises(FileNotFoundError, match="1500.jpg"):  # in the .mat, but not among the 200 stimuli
        OSIE(shared_data, names=["1500.jpg"])


@pytest.mark.data
def test_centre_bias_beats_uniform_on_real_fixations(shared_data: Path) -> None:
    osie = OSIE(shared_data)
    samples = [osie[i] for i in range(8)]  # decoded and blurred once, scored under both grid policies
    centre = centre_bias((14, 14))

    def model_maps(images: torch.Tensor) -> dict[str, torch.Tensor]:
        n = images.shape[0]
        return {"C_VFM": torch.full((n, 14, 14), 1 / 196), "C_AGT": centre.expand(n, 14, 14)}

    for policy in ("to_human", "to_model"):
        table = evaluate_human_alignment(samples, model_maps, batch_size=4, resample=policy)
        scores = table.summary()
        assert table.scores["C_AGT"]["cc"].numel() == 8
        assert scores["C_AGT"]["cc"][0] > 0.2 and scores["C_VFM"]["cc"] == (0.0, 0.0), policy
        assert scores["C_AGT"]["nss"][0] > 0.5 and scores["C_VFM"]["nss"] == (0.0, 0.0), policy
        # AUC-Judd: a uniform map is chance (0.5) exactly, the centre bias well above it on every image
        assert scores["C_VFM"]["auc_judd"] == (0.5, 0.0), policy
        assert (table.scores["C_AGT"]["auc_judd"] > 0.6).all(), policy
        assert table.ratio() > 1.0
