"""Task-conditioned prompts and response templates (paper Sec. 4.2), with the character spans of their words.

Classification: prompt "Classify foreground vs. background",
answer ``{foreground: [cat], background: [sky, ...]}``.
Dense prediction: prompt "Locate all {tgt_obj} instances", answer ``{objects: [dog, dog], background: [...]}``
with one entry per instance k (Eq. 12 sums their maps). The answer is teacher-forced; its words' character
spans let `tokens.token_rows` find their tokens through the tokenizer's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["classification", "dense"]
TASKS: tuple[str, ...] = ("classification", "dense")

CLASSIFY_PROMPT = "Classify foreground vs. background"
DENSE_PROMPT = "Locate all {tgt_obj} instances"
DEFAULT_BACKGROUND_WORDS: tuple[str, ...] = ("sky", "ground", "wall", "grass", "water")
_FORE_KEY = {"classification": "foreground", "dense": "objects"}
# Characters of the answer template itself: a word containing one would make the spans ambiguous.
_RESERVED = set("{}[],:")

Span = tuple[int, int]


@dataclass(frozen=True)
class Answer:
    """A response template filled in: `text` and the half-open character spans of its words in `text`.

    fore: one span per foreground entry (1 for classification, K instances for dense prediction).
    back: one span per background word.
    """

    text: str
    fore: tuple[Span, ...]
    back: tuple[Span, ...]


def check_word(word: str, field: str) -> str:
    """Return `word` stripped, or raise if it is empty or contains a character of the template."""
    clean = word.strip()
    if not clean or _RESERVED & set(clean):
        raise ValueError(
            f"{field} must be a non-empty name without any of {''.join(sorted(_RESERVED))}, got {word!r}"
        )
    return clean


def task_prompt(task: Task, fore_words: Sequence[str]) -> str:
    """The language prompt. Dense: tgt_obj lists the distinct object names in order ("dog and person")."""
    if task == "classification":
        return CLASSIFY_PROMPT
    if task == "dense":
        names = list(dict.fromkeys(fore_words))
        tgt = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return DENSE_PROMPT.format(tgt_obj=tgt)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _list(words: Sequence[str], start: int) -> tuple[str, tuple[Span, ...]]:
    spans, parts, pos = [], [], start
    for i, word in enumerate(words):
        if i:
            parts.append(", ")
            pos += 2
        spans.append((pos, pos + len(word)))
        parts.append(word)
        pos += len(word)
    return "".join(parts), tuple(spans)


def answer_prefix(task: Task, fore_words: Sequence[str]) -> tuple[str, tuple[Span, ...]]:
    """The answer up to the opening bracket of the background list, and the foreground spans in it.

    E.g. ``{foreground: [cat], background: [``; used as the forced start of generation in "generate" mode.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not fore_words:
        raise ValueError("fore_words must name at least one foreground class or object")
    head = "{" + _FORE_KEY[task] + ": ["
    fore_text, fore = _list(fore_words, len(head))
    return head + fore_text + "], background: [", fore


def format_answer(task: Task, fore_words: Sequence[str], back_words: Sequence[str]) -> Answer:
    """The full teacher-forced answer with the spans of every foreground and background word."""
    if not back_words:
        raise ValueError("back_words must hold at least one background word")
    prefix, fore = answer_prefix(task, fore_words)
    back_text, back = _list(back_words, len(prefix))
    return Answer(text=prefix + back_text + "]}", fore=fore, back=back)


def parse_background(generated: str, max_words: int) -> list[str]:
    """Background words from the text the VLM generated after `answer_prefix`: up to the first "]".

    Entries are split on commas, stripped, and dropped where empty or holding template characters; without
    a closing "]" (generation hit its token limit) the last entry is cut off and dropped. At most `max_words`
    are kept. May return [] (the caller decides what that means).
    """
    closed = "]" in generated
    parts = generated.split("]", 1)[0].split(",")
    words = []
    for part in parts if closed else parts[:-1]:
        word = part.strip().strip("'\"")
        if word and not _RESERVED & set(word) and "\n" not in word:
            words.append(word)
    return words[:max_words]


def conversation(prompt: str, answer: str | None) -> list[dict[str, Any]]:
    """Chat messages (transformers' multimodal format): the user turn holds the image and the prompt."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
