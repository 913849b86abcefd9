"""The one small interface every backend implements.

Data flows one way: the task builds a `Request` (edgevl.request: images + prompt text), the engine streams text
pieces back, the task parses the joined text. Engines know nothing of tasks' output formats; tasks know nothing
of backends.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Generator, Sequence

from edgevl import model_cards
from edgevl.chat import format_prompt
from edgevl.errors import ModelError
from edgevl.families import get_family
from edgevl.manifest import read_manifest
from edgevl.model_files import check_model_files
from edgevl.request import Request, Stats

if TYPE_CHECKING:
    import numpy as np


#: What engines without a language model do (the embedded engine): read text and tables, no captions or
#: questions. Here rather than in engines/classic.py so the desktop app knows it without importing numpy.
READING_TASKS = frozenset({"ocr", "table"})


class Engine(abc.ABC):
    """A loaded model that answers requests. Use it as a context manager, or call `close()`."""

    #: prompt family the tasks tune their wording for ("qwen2vl", "minicpmv", or "classic" for non-LLM engines)
    family: str = "classic"
    #: tasks this engine can do; language-model engines can do them all
    tasks: frozenset[str] = frozenset({"ocr", "table", "caption", "ask", "extract"})
    #: a short human description ("llama.cpp qwen2-vl-2b q4_k_m, CPU")
    description: str = ""
    #: where the model runs: "cpu", "gpu" (llama.cpp's offload), "cuda" (ONNX Runtime's provider), "remote"
    device: str = "cpu"
    #: why it runs there, in words a user can act on ("CPU: this llama-cpp-python build has no GPU backend...")
    device_reason: str = ""

    def __init__(self) -> None:
        self.last_stats = Stats()

    @abc.abstractmethod
    def stream(self, request: Request) -> Generator[str, None, None]:
        """Yield the answer piece by piece as it is produced."""

    def close(self) -> None:  # noqa: B027 - optional: an engine that holds nothing keeps this no-op
        """Release the model and everything it holds (memory, GPU buffers). Safe to call twice."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ModelFolderEngine(Engine):
    """What the engines of converted model folders share: the checked manifest, the model card, the image-token
    budget and the chat prompt. Subclasses set `format` and do the backend's work."""

    format: str = ""

    def __init__(self, folder: str | Path, image_max_tokens: int | None) -> None:
        super().__init__()
        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        if self.manifest.format != self.format:
            raise ModelError(f"{self.folder}: holds a {self.manifest.format} model, not {self.format.upper()}")
        check_model_files(self.folder, self.manifest)
        self.family = self.manifest.family
        #: what is particular to the model's family (preprocessing, placeholders)
        self.model_family = get_family(self.family)
        try:
            self.card = (model_cards.card_by_id(self.manifest.card) if self.manifest.card
                         else model_cards.family_card(self.family))
        except KeyError as error:  # a card this edgevl does not know
            raise ModelError(f"{self.folder}: unknown model card ({error.args[0]}); this model needs another "
                             "version of edgevl") from None
        self.image_max_tokens = image_max_tokens

    @classmethod
    def open(cls, folder: str | Path, *, threads: int | None, gpu: bool, image_max_tokens: int | None,
             context_size: int) -> ModelFolderEngine:
        """What `edgevl.api.open_engine` calls for any engine in the registry (edgevl.families.ENGINES);
        engines whose constructor takes other options translate them here."""
        return cls(folder, threads=threads, gpu=gpu, image_max_tokens=image_max_tokens,  # type: ignore[call-arg]
                   context_size=context_size)  # (the llama.cpp engines take exactly these; others override open())

    @abc.abstractmethod
    def teacher_forced_logits(self, request: Request, tokens: Sequence[int]) -> np.ndarray:
        """[len(tokens) + 1, vocab] next-token logits: after the request's prompt, then after each of `tokens`
        fed in turn whatever the model would have chosen (teacher forcing; edgevl.verify compares them with the
        reference's). Greedy decoding takes exactly these steps while its choices agree with `tokens`."""

    def first_token_logits(self, request: Request) -> np.ndarray:
        """The next-token logits after the request's prompt, which parity tests and benchmarks compare with the
        reference implementation."""
        return self.teacher_forced_logits(request, [])[0]

    def image_budget(self, task: str) -> tuple[int, int]:
        """(min, max) image tokens per image: the engine's override, else the model card's for the task."""
        max_tokens = self.image_max_tokens or self.card.image_max_tokens(task)
        return min(int(self.card.settings["image_min_tokens"]), max_tokens), max_tokens

    def prompt(self, request: Request, image_markers: Sequence[str]) -> str:
        """The request in the model's chat template; the card's system prompt unless the request brings one."""
        manifest, settings = self.manifest, self.card.settings
        default_system = manifest.system_prompt if manifest.system_prompt is not None else settings.get("system_prompt")
        system = request.system if request.system is not None else default_system
        template = manifest.chat_template or settings["chat_template"]
        return format_prompt(template, system, request.prompt, image_markers)


class StopFilter:
    """Cuts the answer where a stop string appears, holding back text that may be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.held += text
        found = [self.held.index(stop) for stop in self.stops if stop in self.held]
        if found:
            self.stopped = True
            out, self.held = self.held[:min(found)], ""
            return out
        keep = max((n for stop in self.stops for n in range(1, len(stop)) if self.held.endswith(stop[:n])), default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out
