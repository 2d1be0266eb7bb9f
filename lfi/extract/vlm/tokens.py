"""Where things sit in the token sequence: answer words by the tokenizer's offsets, image tokens by id.

Never hard-coded positions: the chat template, the tokenizer and the number of image tokens all vary by model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lfi.extract.vlm.prompts import Span


def expanded_text(rendered: str, image_token: str, n_image_tokens: int) -> str:
    """The text the processor tokenises: its single image placeholder repeated once per image token.

    transformers' LLaVA processor expands ``<image>`` to one placeholder per image feature before tokenising,
    so the offsets it returns point into this text, not into the chat template's output.
    """
    if rendered.count(image_token) != 1:
        raise ValueError(
            f"rendered prompt must hold exactly one {image_token!r}, got {rendered.count(image_token)}"
        )
    return rendered.replace(image_token, image_token * n_image_tokens)


def locate(text: str, part: str) -> int:
    """Character index of the last occurrence of `part` in `text` (the answer comes last), or raise."""
    at = text.rfind(part)
    if at < 0:
        raise ValueError(
            f"{part!r} not found in the rendered chat text {text!r}; does the chat template drop it?"
        )
    return at


def token_rows(offsets: torch.Tensor, span: Span) -> list[int]:
    """Indices of the tokens whose characters overlap the half-open span [start, end).

    offsets: (T, 2) int, character (start, end) per token as returned with ``return_offsets_mapping``;
    tokens with an empty range (special tokens, padding) never match.
    """
    start, end = span
    lo, hi = offsets[:, 0], offsets[:, 1]
    hit = (hi > lo) & (lo < end) & (hi > start)
    rows = torch.nonzero(hit).flatten().tolist()
    if not rows:
        raise ValueError(
            f"no token covers characters {span}; the tokenizer's offsets do not reach the answer"
        )
    return rows


def check_image_offsets(text: str, offsets: torch.Tensor, image_rows: torch.Tensor, image_token: str) -> None:
    """Raise unless every image-token row's offsets point at an image placeholder in `text`.

    This checks the assumption of `expanded_text` against what the processor actually tokenised.
    offsets: (T, 2); image_rows: (N,) token indices.
    """
    for row, (s, e) in zip(image_rows.tolist(), offsets[image_rows].tolist(), strict=True):
        if text[s:e] != image_token:
            raise ValueError(
                f"image token at row {row} has offsets {(s, e)} covering {text[s:e]!r}, not {image_token!r}: "
                "the processor expands the image placeholder differently than lfi assumes"
            )


def image_positions(input_ids: torch.Tensor, image_token_id: int, expected: int) -> torch.Tensor:
    """(B, T) token ids -> (B, N) long positions of the image tokens, N = `expected` in every row."""
    is_image = input_ids == image_token_id
    counts = is_image.sum(dim=1)
    if not bool((counts == expected).all()):
        raise ValueError(
            f"every sequence must hold {expected} image tokens (id {image_token_id}), got {counts.tolist()}"
        )
    return torch.nonzero(is_image)[:, 1].reshape(input_ids.shape[0], expected)


def image_columns(input_ids: torch.Tensor, image_token_id: int) -> tuple[torch.Tensor, list[int]]:
    """(B, T) token ids -> ((B, N_max) long positions of each row's image tokens, their counts per row).

    Rows with fewer image tokens (any-res, native resolution) repeat their first position up to N_max; callers
    read the first counts[b] columns of row b only.
    """
    is_image = input_ids == image_token_id
    counts = is_image.sum(dim=1).tolist()
    if min(counts) == 0:
        raise ValueError(f"every sequence must hold image tokens (id {image_token_id}), got counts {counts}")
    cols = [torch.nonzero(row).flatten().tolist() for row in is_image]
    return pad_rows(cols), counts


def pad_rows(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-sequence query rows -> (B, R) long, R = the longest; shorter lists repeat their first row.

    The repeats are computed and ignored: callers index the first len(rows[b]) entries of row b only.
    """
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [r[0]] * (width - len(r)) for r in rows], dtype=torch.long)
