"""Build timm ViTs, optionally from a local checkpoint (no hub access, no pickle)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors (preferred) or a torch file read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common wrappers of training checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def create_vit(name: str, checkpoint: str | Path | None = None, **kwargs) -> nn.Module:
    """timm.create_model(name, **kwargs), with weights from a local `checkpoint` when given.

    timm adapts the checkpoint to the model: a different `num_classes` drops the pretrained classifier, a
    different `img_size` resamples the position embeddings. Loading is strict otherwise.
    """
    if checkpoint is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    state = load_state_dict(checkpoint)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
