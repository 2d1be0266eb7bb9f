"""Fixtures of the I-DETR tests: tiny random HF DETR models (no download)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images of a padded batch: (2, 3, 96, 128) and pixel_mask (2, 96, 128); image 1 is 64x64."""
    x = torch.randn(2, 3, 96, 128)
    mask = torch.ones(2, 96, 128, dtype=torch.long)
    mask[1, :, 64:] = 0
    mask[1, 64:] = 0
    return x, mask
