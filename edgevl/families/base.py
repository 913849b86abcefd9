"""What a model family is to the rest of edgevl: model-card defaults, prompt wording, the engine per format, and
the hooks engines call for what differs between families (how an image is resized, how images enter an ONNX
prompt). A family module subclasses `Family` and overrides only what is particular to it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from collections.abc import Callable, Mapping, Sequence

from PIL import Image

from edgevl.errors import ModelError

# numpy is imported inside the functions that compute with it: listing families (model cards, the desktop app's
# start-up) must not pay numpy's import, ~0.15 s
if TYPE_CHECKING:
    import numpy as np

    #: runs a family's exported vision graph on named inputs and returns its one output
    RunVision = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class EncodedImages:
    """Images made ready for a decoder-only ONNX model: their features in prompt order, each image's placeholder
    text for the prompt, and each image's layout (what the position ids need to know of it)."""

    features: np.ndarray  # [image tokens, width]
    markers: list[str]
    layouts: Sequence[tuple[int, ...]]


class OnnxImages(abc.ABC):
    """How a family's exported vision graph is fed and where its features sit in the prompt, for the ONNX engine
    (edgevl/engines/onnx.py), which does everything else: tokenizing, the embedding and decoder graphs, the KV
    cache and sampling."""

    #: rows of the decoder's position_ids input: 3 for M-RoPE (time, row, column), 1 for plain RoPE
    position_axes: ClassVar[int] = 1

    @abc.abstractmethod
    def encode(self, images: Sequence[Image.Image], budget: tuple[int, int], run_vision: RunVision) -> EncodedImages:
        """Preprocess and encode the images within a (min, max) image-token budget per image."""

    def position_ids(self, input_ids: Sequence[int], encoded: EncodedImages) -> np.ndarray:
        """Position ids [position_axes, len(input_ids)] of the whole prompt; plain RoPE counts up."""
        import numpy as np
        return np.arange(len(input_ids), dtype=np.int64)[None]


class Family:
    """One model family. Subclasses set the class attributes and override the hooks their models need."""

    #: the name stored in model folders' manifests and shown by `edgevl models` ("qwen2vl")
    name: ClassVar[str]
    #: what every model card of the family starts from (chat template, system prompt, image budgets...)
    settings: ClassVar[Mapping[str, Any]]
    #: output format -> "module:Class" of the engine that runs it (imported only when a model is opened)
    engines: ClassVar[Mapping[str, str]]
    #: prompt id ("ocr", "table", "caption.short"...) -> the family's own wording, where the task's default
    #: wording does not suit its models
    prompts: ClassVar[Mapping[str, str]] = {}
    #: (language model architecture, vision projector type) of GGUF files made by other tools (llama.cpp's
    #: converter, LM Studio, Ollama) that run as this family: what `edgevl import` adopts (edgevl/gguf_import.py)
    imported_gguf: ClassVar[tuple[tuple[str, str], ...]] = ()

    def resize(self, image: Image.Image, budget: tuple[int, int]) -> Image.Image:
        """The image as the reference processor resizes it for a (min, max) image-token budget, for backends
        that cut it into patches themselves (llama.cpp's libmtmd). Default: unchanged."""
        return image

    def onnx_images(self, config: dict[str, Any]) -> OnnxImages:
        """The ONNX engine's image hooks for a model folder's config.json."""
        raise ModelError(f"edgevl cannot run {self.name} models exported to ONNX yet; convert with --to gguf")
