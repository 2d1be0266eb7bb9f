"""Models: I-ViT (interaction attention over timm ViTs) and its building blocks."""

from lfi.models.interaction_attention import GateWeights, MapRequest, interaction_attention
from lfi.models.ivit import TABLE3, InteractionOutput, InteractionViT, IViTConfig, interactionize
from lfi.models.vit import create_vit, load_state_dict

__all__ = [
    "TABLE3",
    "GateWeights",
    "IViTConfig",
    "InteractionOutput",
    "InteractionViT",
    "MapRequest",
    "create_vit",
    "interaction_attention",
    "interactionize",
    "load_state_dict",
]
