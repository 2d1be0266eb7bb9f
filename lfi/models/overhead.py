"""The parameter and FLOP overhead of I-ViT over its ViT (the #params / FLOPs of Table 1; `lfi params`)."""

from __future__ import annotations

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from lfi.models.ivit import IViTConfig, interactionize


def overhead(name: str, flops: bool = False) -> dict[str, float | str]:
    """Parameters (and optionally forward FLOPs at the model's image size) of a timm ViT and its I-ViT."""
    device = "cpu" if flops else "meta"  # FLOP counting needs real tensors; sizes alone do not
    with torch.device(device):
        vit = timm.create_model(name).eval()
        ivit = interactionize(vit, IViTConfig()).eval()
    row: dict[str, float | str] = {
        "model": name,
        "vit_params_M": sum(p.numel() for p in vit.parameters()) / 1e6,
        "ivit_params_M": sum(p.numel() for p in ivit.parameters()) / 1e6,
    }
    if flops:
        x = torch.randn(1, 3, *vit.patch_embed.img_size)
        for key, model in (("vit_GFLOPs", vit), ("ivit_GFLOPs", ivit)):
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
            row[key] = counter.get_total_flops() / 1e9
    return row
