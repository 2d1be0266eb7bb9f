"""Store keys of images: which interaction map belongs to which image file.

Here, at the bottom of the package graph (stdlib only), because datasets put the key into every sample
and the extraction loop and the interaction store look maps up by it.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath


def image_key(relpath: str, data: bytes) -> str:
    """Stable id of an image: its dataset-relative path and a short hash of its bytes, "<relpath>#<12 hex>".

    The path keeps keys readable and unique within a dataset; the hash makes a changed file a new key.
    """
    rel = PurePosixPath(relpath.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"image_key: relpath must be a dataset-relative path, got {relpath!r}")
    return f"{rel.as_posix()}#{hashlib.sha256(data).hexdigest()[:12]}"


def key_relpath(key: str) -> str:
    """The dataset-relative path of an `image_key` (what it was made from, less the bytes' hash)."""
    return key.rsplit("#", 1)[0]
