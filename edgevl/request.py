"""What flows between tasks and engines: a `Request` (images + the user's words + `Sampling`) goes in, text comes
out, and the engine's `Stats` say how long it took.

Its own module so that tasks (which build requests) and engines (which run them) depend on it and never on each
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from edgevl.layout import DEFAULT_LAYOUT


@dataclass(frozen=True)
class Sampling:
    """How to generate. temperature 0 means greedy, which is what OCR and tables want."""

    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One question about one or more images.

    `task` lets engines that are not language models (the classic OCR engine) pick what to do; language-model
    engines ignore it and use `prompt`, which holds only the user's words - each engine adds its own chat
    template and image markers. `json_schema`, when set, is the JSON schema the answer must be valid against:
    engines that generate tokens constrain decoding to it, remote ones send it as the OpenAI `response_format`.
    `layout` is how engines that find text boxes order them (see `edgevl.layout`).
    """

    task: str
    images: tuple[Image.Image, ...]
    prompt: str
    system: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None
    layout: str = DEFAULT_LAYOUT


@dataclass
class Stats:
    """Timings of the last request, filled in by engines that can measure them (zeros otherwise)."""

    image_encode_ms: float = 0.0
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    generated_tokens: int = 0
    decode_ms: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return 1000.0 * self.prompt_tokens / self.prefill_ms if self.prefill_ms else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return 1000.0 * self.generated_tokens / self.decode_ms if self.decode_ms else 0.0
