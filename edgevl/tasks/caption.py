"""Captions of three lengths: a one-sentence alt text, a short description, a detailed paragraph."""

from __future__ import annotations

from edgevl.errors import EdgevlError
from edgevl.families import wording
from edgevl.tasks.base import Task, TextResult

#: length -> (prompt, max_tokens). The token budgets leave room for the longest sensible answer of each length.
#: Both supported families follow these plain instructions well; a family may still word them its own way
#: (prompt ids "caption.short", "caption.medium", "caption.long").
LENGTHS = {
    "short": ("Describe this image in one sentence.", 64),
    "medium": ("Describe this image in two or three sentences.", 160),
    "long": (
        "Describe this image in one detailed paragraph: the main subjects and what they are doing, the setting, "
        "colours and lighting, and any text that is visible.",
        400,
    ),
}
DEFAULT_LENGTH = "medium"


class CaptionResult(TextResult):
    """A description of the image."""


class CaptionTask(Task):
    name = "caption"

    def prompt(self, family: str, length: str = DEFAULT_LENGTH) -> str:
        return wording(family, f"caption.{length}", _length_setting(length)[0])

    def max_tokens(self, length: str = DEFAULT_LENGTH) -> int:
        return _length_setting(length)[1]

    def parse(self, text: str) -> CaptionResult:
        return CaptionResult(text.strip())


def _length_setting(length: str) -> tuple[str, int]:
    if length not in LENGTHS:
        raise EdgevlError(f"unknown caption length {length!r}; choose one of {', '.join(LENGTHS)}")
    return LENGTHS[length]
