"""The GPU-resident data path (run here on the CPU): image and map cropped and flipped together, the eval
crop, determinism per (seed, epoch, batch), resumed batches, and the image cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfi.data.cache import ImageCache
from lfi.data.gpu import DeviceBatches, DeviceImages, crop_resize, random_resized_boxes
from lfi.demo.synthetic import ShortcutShapes
from lfi.maps import normalize_map, resample_map

SIDE = 32


def blob_data(n: int = 8) -> DeviceImages:
    """Images whose red channel is their teacher map (a blob at a random place), maps on an 8x8 grid."""
    g = torch.Generator().manual_seed(0)
    maps = torch.zeros(n, 8, 8)
    for i in range(n):
        y, x = torch.randint(0, 6, (2,), generator=g).tolist()
        maps[i, y : y + 3, x : x + 2] = 1.0
    maps = normalize_map(maps)
    red = torch.nn.functional.interpolate(
        maps[:, None] / maps.amax((1, 2))[:, None, None, None], size=SIDE, mode="nearest"
    )
    images = torch.zeros(n, 3, SIDE, SIDE, dtype=torch.uint8)
    images[:, 0] = (red[:, 0] * 255).round().to(torch.uint8)
    return DeviceImages.of(images.numpy(), np.arange(n), maps, torch.ones(n, dtype=torch.bool), "cpu")


def test_crops_move_image_and_map_together():
    data = blob_data()
    batches = DeviceBatches(
        data,
        list(range(8)),
        batch_size=8,
        size=SIDE,
        train=True,
        seed=3,
        grid=(4, 4),
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    batch = next(iter(batches))
    # the red channel (the map drawn into the image) seen on the student grid, against the map that came out
    red = resample_map(batch["image"][:, 0].clamp_min(0), (4, 4))
    agree = (normalize_map(red) - batch["map"]).abs().sum((1, 2))
    valid = batch["map_valid"]
    assert valid.any() and (agree[valid] < 0.35).all(), agree
    assert torch.allclose(batch["map"][valid].sum((1, 2)), torch.ones(int(valid.sum())))
    assert (batch["map"][~valid] == 0).all()


def test_batches_depend_only_on_seed_epoch_and_number():
    data = blob_data()
    make = lambda seed: DeviceBatches(data, [(1, i) for i in range(8)], 4, SIDE, True, seed, (4, 4))  # noqa: E731
    a, b, c = (list(make(s)) for s in (0, 0, 1))
    assert all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["map"], y["map"])
        for x, y in zip(a, b, strict=True)
    )
    assert not torch.equal(a[0]["image"], c[0]["image"])

    # a resumed epoch that skips the first batch draws the second batch's crops as the full epoch did
    class Skipped(list):
        def __len__(self) -> int:
            return 8

    resumed = list(DeviceBatches(data, Skipped([(1, i) for i in range(4, 8)]), 4, SIDE, True, 0, (4, 4)))
    assert len(resumed) == 1 and torch.equal(resumed[0]["image"], a[1]["image"])


def test_flip_and_normalisation_before_the_crop_equal_them_after():
    """The batch flips and normalises the stored images before cropping them (cheaper): the same images as
    cropping first, then flipping and normalising the (B, 3, size, size) result."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (6, 3, SIDE, SIDE), dtype=torch.uint8, generator=g)
    data = DeviceImages.of(images.numpy(), np.arange(6), device="cpu")
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    seed, epoch, number = 5, 2, 1
    batch = DeviceBatches(data, list(range(6)), 6, 20, True, seed, mean=mean, std=std).batch(
        torch.arange(6), epoch, number
    )
    generator = torch.Generator().manual_seed(hash((seed, epoch, number)) & 0x7FFF_FFFF_FFFF_FFFF)
    boxes = random_resized_boxes(6, SIDE, generator)
    flip = torch.rand(6, generator=generator) < 0.5
    assert flip.any() and not flip.all()  # both cases are checked
    crops = crop_resize(images.float(), boxes, (20, 20))
    crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    expected = (crops - torch.tensor(mean).view(1, 3, 1, 1) * 255) / (
        torch.tensor(std).view(1, 3, 1, 1) * 255
    )
    torch.testing.assert_close(batch["image"], expected, atol=1e-4, rtol=1e-5)


@pytest.mark.gpu
def test_device_batches_never_wait_for_the_gpu():
    """Drawing batches enqueues work only: no host-device synchronisation (one per batch would idle the GPU
    while the host launches every step)."""
    data = blob_data()
    data = DeviceImages(*(t.cuda() for t in (data.images, data.labels, data.maps, data.valid)))
    batches = DeviceBatches(data, [(0, i) for i in range(8)], 2, SIDE, True, 0, (4, 4))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        drawn = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(drawn) == 4 and drawn[0]["image"].is_cuda


def _read_only_map(tmp_path, array: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "images.npy", array)
    return np.load(tmp_path / "images.npy", mmap_mode="r")  # as the image cache opens its array


def test_device_images_of_a_read_only_cache_copy_it_on_the_cpu(tmp_path):
    array = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    data = DeviceImages.of(_read_only_map(tmp_path, array), np.arange(2), device="cpu")
    data.images += 1  # its own memory: the cache stays as it was
    assert torch.equal(data.images, torch.from_numpy(array) + 1)
    assert np.array_equal(np.load(tmp_path / "images.npy"), array)


@pytest.mark.gpu
def test_device_images_of_a_read_only_cache_on_the_gpu_without_a_warning(tmp_path):
    import warnings

    array = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = DeviceImages.of(_read_only_map(tmp_path, array), np.arange(2), device="cuda")
    assert data.images.is_cuda and torch.equal(data.images.cpu(), torch.from_numpy(array))


def test_eval_is_the_central_crop():
    data = blob_data(2)
    batch = next(
        iter(DeviceBatches(data, [0, 1], 2, 28, False, crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1)))
    )
    centre = data.images[:, :, 2:30, 2:30].float() / 255  # mean 0, std 1 of the [0, 1] image
    torch.testing.assert_close(batch["image"], centre, atol=1e-4, rtol=0)
    assert "map" not in batch


def test_random_resized_boxes_follow_the_recipe():
    boxes = random_resized_boxes(4000, 64, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64 + 1e-4).all()
    area = w * h / 64**2
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-3 and ratio.max() <= 4 / 3 + 1e-3
    assert 0.45 < area.mean() < 0.6  # uniform over the accepted areas, as torchvision draws them


def test_image_cache_is_built_once_and_reused(tmp_path):
    data = ShortcutShapes("train", 20, size=24)
    cache = ImageCache.build(data, 24, tmp_path, progress=False)
    assert cache.images.shape == (20, 3, 24, 24) and cache.images.dtype == np.uint8
    assert torch.equal(
        torch.from_numpy(np.array(cache.images[3])), data[3]["image"].as_subclass(torch.Tensor)
    )
    assert cache.keys[3] == data[3]["key"] and int(cache.labels[3]) == data[3]["label"]
    again = ImageCache.build(data, 24, tmp_path, progress=False)
    assert again.path == cache.path and len(list(tmp_path.glob("*.npy"))) == 1
    ImageCache.build(data, 16, tmp_path, progress=False)  # another size is another cache
    assert len(list(tmp_path.glob("*.npy"))) == 2


def _sampler_order(size: int, seed: int, epoch: int, batch: int, rank: int, world: int, skip: int) -> list:
    """ResumableSampler's order as it was made with Python lists (before `index_tensor`): the reference."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    per_rank = -(-size // world)
    kept = per_rank if per_rank <= batch else per_rank - per_rank % batch
    return [
        (epoch, i) for i in (order + order[: per_rank * world - size])[rank::world][:kept][skip * batch :]
    ]


@pytest.mark.parametrize(
    ("size", "world", "batch", "skip"), [(37, 1, 4, 0), (37, 3, 4, 2), (5, 4, 2, 0), (64, 2, 8, 3)]
)
def test_the_sampler_order_as_one_tensor_is_the_order_it_yields(size, world, batch, skip):
    from lfi.train.data import ResumableSampler

    for rank in range(world):
        sampler = ResumableSampler(size, seed=3, batch_size=batch, rank=rank, world=world)
        sampler.resume(2, skip)
        sampler.set_epoch(2)
        expected = _sampler_order(size, 3, 2, batch, rank, world, skip)
        assert list(sampler) == expected
        assert sampler.index_tensor().tolist() == [i for _, i in expected]


def test_batches_from_the_sampler_tensor_equal_those_from_its_pairs():
    from lfi.train.data import ResumableSampler

    data = blob_data()
    sampler = ResumableSampler(len(data), seed=1, batch_size=3, rank=0, world=1)
    sampler.resume(4, 1)
    sampler.set_epoch(4)

    class Pairs(list):  # the same pairs as a plain sequence, of the sampler's full length (resumed)
        def __len__(self) -> int:
            return len(sampler)

    fast = list(DeviceBatches(data, sampler, 3, SIDE, True, 0, (4, 4)))
    slow = list(DeviceBatches(data, Pairs(sampler), 3, SIDE, True, 0, (4, 4)))
    assert len(fast) == len(slow) == 1  # 6 of 8 per epoch (whole batches), the first skipped
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
