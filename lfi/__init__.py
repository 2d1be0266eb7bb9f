"""lfi: Learning from Interactions. Supervise where vision transformers look, with maps from a teacher.

The public names load on first use (PEP 562), so `import lfi.config` or `lfi --help` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "TABLE3": "lfi.models",
    "IViTConfig": "lfi.models",
    "InteractionOutput": "lfi.models",
    "InteractionViT": "lfi.models",
    "MapRequest": "lfi.models",
    "create_vit": "lfi.models",
    "interaction_attention": "lfi.models",
    "interactionize": "lfi.models",
    "AlignmentLoss": "lfi.train.losses",
    "Criterion": "lfi.train.losses",
    "classification_criterion": "lfi.train.losses",
    "load_config": "lfi.config",
    "build": "lfi.train.build",
    "train": "lfi.train.engine",
    "load_run": "lfi.train.runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lfi' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
