"""lfi: Learning from Interactions. Supervise where vision transformers look, with maps from a teacher."""

from lfi.models import (
    TABLE3,
    InteractionOutput,
    InteractionViT,
    IViTConfig,
    MapRequest,
    create_vit,
    interaction_attention,
    interactionize,
)
from lfi.train.losses import AlignmentLoss, LfiCriterion

__version__ = "0.1.0"

__all__ = [
    "TABLE3",
    "AlignmentLoss",
    "IViTConfig",
    "InteractionOutput",
    "InteractionViT",
    "LfiCriterion",
    "MapRequest",
    "create_vit",
    "interaction_attention",
    "interactionize",
]
