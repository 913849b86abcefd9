"""OCR: all the text of an image, line breaks and reading order kept."""

from __future__ import annotations

import re

from edgevl.families import wording
from edgevl.tasks.base import Task, TextResult

#: The wording for models whose family has none of its own (edgevl.families).
DEFAULT_PROMPT = (
    "Read all the text in the image. Keep the original line breaks and reading order; output only the text."
)

#: A first line that introduces the text instead of being part of it ("Sure! Here is the text in the image:").
_PREAMBLE = re.compile(
    r"(?:(?:sure|certainly|okay|ok|of course)\b[,.!]?\s*)?"
    r"(?:here(?:'s| is| are)|below is|the (?:extracted |transcribed )?text)\b"
    r"(?=[^\n]*\b(?:text|image|screenshot|picture|transcri\w*|content|ocr)\b)[^\n]*:",
    re.IGNORECASE,
)


class OcrResult(TextResult):
    """The text read from the image(s)."""


class OcrTask(Task):
    name = "ocr"

    def prompt(self, family: str) -> str:
        return wording(family, self.name, DEFAULT_PROMPT)

    def max_tokens(self) -> int:
        return 2048

    def parse(self, text: str) -> OcrResult:
        return OcrResult(clean_transcript(text))


def clean_transcript(text: str) -> str:
    """Remove what models wrap around a transcript: an introductory line, a code fence, trailing spaces."""
    lines = _trimmed_lines(text)
    if _PREAMBLE.fullmatch(lines[0].strip()):
        lines = _trimmed_lines("\n".join(lines[1:]))
    if len(lines) >= 2 and lines[0].lstrip().startswith("```") and lines[-1].strip() == "```":
        lines = _trimmed_lines("\n".join(lines[1:-1]))
    return "\n".join(lines)


def _trimmed_lines(text: str) -> list[str]:
    """The lines without trailing spaces, blank lines at the start and end removed (indentation is kept)."""
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n").split("\n")
