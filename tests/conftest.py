"""Shared test fixtures. Tests are offline (HF_HUB_OFFLINE=1) and deterministic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Real data: $LFI_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("LFI_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _runs_root(tmp_path_factory: pytest.TempPathFactory):
    """Tests write run folders under pytest's temporary folder: name it a root they may be written to
    (`lfi.config.output_roots`), as a user names theirs with LFI_RUNS_ROOT."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LFI_RUNS_ROOT", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads():
    """Restores torch's intra-op thread count after each test: a test that fixes it (the overfit tests do,
    as CPU sums round differently with 1 and 2 threads) must not change the ones that run after it."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set LFI_DATA to its folder)")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
