"""Result-oriented knowledge distillation: the baseline that transfers a teacher's answers, not its interactions.

L_kd = T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) (Hinton et al. 2015), where z_t are the teacher's
logits restricted to the dataset's classes. The teacher is the same model as the offline 'vit' interaction
teacher (DeiT-Tiny, ImageNet-1k); TinyImageNet's 200 wnids are all ImageNet classes, found by wnid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lfi.models import create_vit


def imagenet_indices(wnids: Sequence[str], synsets: str | Path) -> list[int]:
    """Index of each wnid in the ImageNet-1k output order listed in `synsets` ('<wnid> <names>' lines)."""
    path = Path(synsets)
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet synset list not found: {path}")
    order = {
        line.split(maxsplit=1)[0]: i for i, line in enumerate(path.read_text().splitlines()) if line.strip()
    }
    missing = [w for w in wnids if w not in order]
    if missing:
        raise ValueError(
            f"{path}: classes {missing[:5]} (of {len(missing)}) are not ImageNet-1k wnids; "
            "result-oriented KD needs a teacher with logits for every class"
        )
    return [order[w] for w in wnids]


class LogitTeacher(nn.Module):
    """A frozen ImageNet classifier whose logits are restricted to the dataset's classes.

    model / checkpoint: timm name and local weights; class_index: (K,) ImageNet index of each dataset class;
    input_size: the teacher's input resolution (student images are resized to it, same normalisation).
    """

    def __init__(self, model: str, checkpoint: str | Path, class_index: Sequence[int], input_size: int = 224):
        super().__init__()
        self.net = create_vit(model, checkpoint).eval().requires_grad_(False)
        self.register_buffer(
            "class_index", torch.as_tensor(list(class_index), dtype=torch.long), persistent=False
        )
        self.input_size = input_size

    def train(self, mode: bool = True) -> LogitTeacher:
        return super().train(False)  # always in eval mode (no dropout), whatever the student does

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) normalised as for the student -> (B, K) logits over the dataset's classes."""
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(
                images,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return self.net(images)[:, self.class_index]
