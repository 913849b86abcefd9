"""What every task shares: turning images and options into a `Request`, and the plain-text result type.

A task knows how to ask (its default wording, which a model family may replace with its own - see
edgevl.families - and sampling defaults) and how to read the answer; it knows nothing about which engine runs
the request.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from collections.abc import Sequence

from PIL import Image

from edgevl.errors import EdgevlError
from edgevl.layout import DEFAULT_LAYOUT, LAYOUT_MODES
from edgevl.request import Request, Sampling


class Result(Protocol):
    """What the CLI needs from any task's result."""

    formats: ClassVar[tuple[str, ...]]

    @property
    def text(self) -> str: ...

    def render(self, fmt: str) -> str: ...


@dataclass(frozen=True)
class TextResult:
    """An answer that is plain text (OCR, caption, free answer); renders as the text itself or as JSON."""

    text: str
    formats: ClassVar[tuple[str, ...]] = ("text", "json")

    def render(self, fmt: str = "text") -> str:
        if fmt == "text":
            return self.text
        if fmt == "json":
            return json.dumps({"text": self.text}, ensure_ascii=False)
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(self.formats)}")


class Task(abc.ABC):
    """One thing users ask of an image. Subclasses set `name` and implement `prompt`, `max_tokens`, `parse`.

    Task-specific options (a caption's `length`, a question) are keyword arguments of `prompt` and
    `max_tokens`; a misspelt option therefore fails loudly with a TypeError.
    """

    name: ClassVar[str]

    def build_request(
        self,
        images: Sequence[Image.Image],
        family: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        layout: str | None = None,
        **options: Any,
    ) -> Request:
        """The request for these images, worded for `family`; `max_tokens`/`temperature` override the defaults;
        `layout` orders the text of engines that find text boxes (see `edgevl.layout`; None: the default)."""
        sampling = Sampling(
            max_tokens=max_tokens if max_tokens is not None else self.max_tokens(**options),
            temperature=temperature if temperature is not None else 0.0,  # greedy: reading, not writing
        )
        return Request(task=self.name, images=tuple(images), prompt=self.prompt(family, **options), sampling=sampling,
                       json_schema=self.json_schema(**options), layout=checked_layout(layout))

    # prompt() and max_tokens() take the task's own keyword options (a caption's length, a question) after these
    # parameters: a task without options overrides them as they are.
    @abc.abstractmethod
    def prompt(self, family: str) -> str:
        """The user's words sent with the images (the engine adds the chat template and image markers)."""

    @abc.abstractmethod
    def max_tokens(self) -> int:
        """Default generation budget: enough for a full answer, small enough to stop a model that loops."""

    def json_schema(self, **options: Any) -> dict[str, Any] | None:
        """The JSON schema the answer must follow (engines constrain decoding to it); None for free text."""
        return None

    @abc.abstractmethod
    def parse(self, text: str) -> Result:
        """Turn the engine's complete answer into a result object."""


def checked_layout(layout: str | None) -> str:
    """The layout mode, the default for None; an unknown one is a clear error."""
    if layout is None:
        return DEFAULT_LAYOUT
    if layout not in LAYOUT_MODES:
        raise EdgevlError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUT_MODES)}")
    return layout
