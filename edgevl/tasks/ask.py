"""Free questions about an image ("What is the total on this receipt?")."""

from __future__ import annotations

from edgevl.errors import EdgevlError
from edgevl.tasks.base import Task, TextResult


class AnswerResult(TextResult):
    """The model's answer to the user's question."""


class AskTask(Task):
    name = "ask"

    def prompt(self, family: str, question: str = "") -> str:
        # The user's own words are the prompt: rewording them would change the question.
        if not question.strip():
            raise EdgevlError("ask needs a question, e.g. edgevl ask image.png \"What is the total?\"")
        return question.strip()

    def max_tokens(self, question: str = "") -> int:
        return 512

    def parse(self, text: str) -> AnswerResult:
        return AnswerResult(text.strip())
