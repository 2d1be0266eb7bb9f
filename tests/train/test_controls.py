"""The control maps (centre, uniform, shuffled) keep an aligned run but not the teacher's knowledge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lfi.config import ConfigError
from lfi.data.controls import ControlMaps, derangement, with_control
from lfi.data.interaction import read_stored_map
from lfi.maps import centre_bias
from lfi.train.build import build
from lfi.train.data import stored_maps_of
from tests.train.conftest import tiny_config


def test_centre_map_is_a_centred_distribution() -> None:
    m = centre_bias((14, 14))
    assert m.shape == (14, 14)
    assert torch.isclose(m.sum(), torch.tensor(1.0))
    assert torch.allclose(m, m.flip(0)) and torch.allclose(m, m.flip(1))  # symmetric about the centre
    assert m[6:8, 6:8].min() > m[0, 0] * 20  # peaked in the middle


def test_derangement_moves_every_key_and_is_seeded() -> None:
    keys = [f"k{i}" for i in range(50)]
    a = derangement(keys, seed=3)
    assert sorted(a) == sorted(keys) and sorted(a.values()) == sorted(keys)  # a permutation
    assert all(k != v for k, v in a.items())  # no image keeps its own map
    assert a == derangement(list(reversed(keys)), seed=3)  # the order keys come in does not matter
    assert a != derangement(keys, seed=4)


def test_controls_over_a_real_store(tiny) -> None:
    data, store, _ = tiny
    keys = [data.train[i]["key"] for i in range(len(data.train))]
    own, _ = stored_maps_of(store, keys)

    shuffled, valid = stored_maps_of(ControlMaps(store, "shuffled", seed=0), keys)
    assert valid.all()
    other = derangement(store.keys(), 0)
    for i, key in enumerate(keys):  # each image carries exactly its partner's map, not its own
        assert torch.equal(shuffled[i], store.map(other[key]))
    assert not torch.equal(shuffled, own)
    assert torch.allclose(shuffled.sum(0), own.sum(0))  # the same maps, in other places

    centre, valid = stored_maps_of(ControlMaps(store, "centre"), keys)
    assert valid.all() and torch.equal(centre, centre_bias(store.grid).expand_as(centre))
    uniform, _ = read_stored_map(ControlMaps(store, "uniform"), keys[0])
    assert torch.allclose(uniform, torch.full(store.grid, 1 / (store.grid[0] * store.grid[1])))


def test_a_missing_key_is_named(tiny) -> None:
    _, store, _ = tiny
    with pytest.raises(KeyError, match="no-such-key"):
        read_stored_map(ControlMaps(store, "centre"), "no-such-key")


def test_none_is_the_store_itself(tiny) -> None:
    _, store, _ = tiny
    assert with_control(store, "none", 0) is store
    with pytest.raises(ValueError, match="control must be one of"):
        ControlMaps(store, "none")


def test_build_serves_the_control_maps_to_training(tiny) -> None:
    data, store, out = tiny
    cfg = tiny_config(out, teacher={"control": "centre"}, data={"gpu_pipeline": True})
    built = build(cfg, data, store)
    assert built.datamodule.store.control == "centre"
    maps = next(iter(built.datamodule.train_dataloader()))["map"]
    # tiny_config trains without augmentation (centre crops): every image gets the same centred map
    assert maps.shape[-2:] == (4, 4)
    assert torch.allclose(maps, maps[:1].expand_as(maps))
    assert torch.allclose(maps[0], maps[0].flip(0), atol=1e-6) and torch.allclose(
        maps[0], maps[0].flip(1), atol=1e-6
    )
    assert maps[0, 1:3, 1:3].min() > maps[0, 0, 0]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {
                "teacher": {"name": "none", "store": None, "control": "shuffled"},
                "model": {"variant": "iq_gc"},
            },
            "aligned",
        ),
        ({"teacher": {"control": "centered"}}, "teacher.control"),
    ],
)
def test_config_rejects_a_control_without_maps(tmp_path: Path, sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, **sections)
