"""MiniCPM-V 2.5 / 2.6 on llama.cpp: the language model GGUF through llama.cpp, the images the released way.

A request: slice each image as the release does (overview + up to 9 slices, edgevl.families.minicpmv), write the
prompt with the release's placeholders (`<image_id>`, `<image>`/`<slice>` markers around `<unk>` runs), tokenize
it with the GGUF's vocabulary, encode every slice (MiniCPMVVision, from the mmproj's weights), then decode the
text tokens and, in place of each `<unk>` run, that slice's embeddings - llama.cpp takes embeddings in a batch
just as it takes tokens. Generation is the llama.cpp engine's.
"""

from __future__ import annotations

import ctypes
import logging
import time

import numpy as np

from edgevl.engines.llamacpp import LlamaCppEngine, set_batch_slot
from edgevl.engines.minicpmv_vision import MiniCPMVVision
from edgevl.engines.onnx import choose_providers
from edgevl.errors import EdgevlError
from edgevl.families.minicpmv import feature_spans, minicpmv_feature_markers, minicpmv_placeholder, minicpmv_slices
from edgevl.request import Request

log = logging.getLogger(__name__)


class MiniCPMVLlamaCppEngine(LlamaCppEngine):
    def _load_vision(self, gpu: bool) -> None:
        """The vision tower on ONNX Runtime (CUDA when onnxruntime-gpu is installed, even if llama.cpp was built
        for the CPU), the embedding batch, and the marker tokens that bound each slice's embeddings."""
        llama = self._llama
        providers, reason = choose_providers("auto" if gpu else "cpu")
        self.vision = MiniCPMVVision(self.manifest.path(self.folder, "mmproj"), providers, self.threads)
        self._resources.callback(self.vision.close)
        log.info("MiniCPM-V vision encoder: ONNX Runtime, %s", reason)
        self.description += f", vision on ONNX Runtime {self.vision.device.upper()}"
        self.vision_settings = settings = self.vision.settings
        width = llama.llama_model_n_embd(self._model)
        if width != settings.width:
            raise EdgevlError(f"{self.folder}: the vision projector gives {settings.width}-wide embeddings but "
                              f"the language model is {width} wide; convert the model again")
        self._embedding_batch = llama.llama_batch_init(self.batch_size, width, 1)
        self._resources.callback(llama.llama_batch_free, self._embedding_batch)
        markers = minicpmv_feature_markers(settings.release)
        self._starts = {self._token_id(start) for start, _ in markers}
        self._ends = {self._token_id(end) for _, end in markers}

    def _prefill(self, request: Request) -> int:
        """Clear the cache, evaluate prompt and images; returns the next position."""
        llama = self._llama
        llama.llama_memory_clear(llama.llama_get_memory(self._ctx), True)
        self.last_stats = stats = type(self.last_stats)()
        settings = self.vision_settings
        sliced = [minicpmv_slices(image, self.max_slices(), settings.slice_size, settings.patch)
                  for image in request.images]
        placeholders = [minicpmv_placeholder(settings.release, grid, settings.query_num, index) + "\n"
                        for index, (_, _, grid) in enumerate(sliced)]
        tokens = self.tokenize(self.prompt(request, placeholders))
        if len(tokens) >= self.context_size:
            raise EdgevlError(f"the prompt needs {len(tokens)} tokens but the context holds {self.context_size}; "
                              "send fewer images or raise the context size")
        pieces = [piece for overview, slices, _ in sliced for piece in (overview, *slices)]
        spans = feature_spans(tokens, self._starts, self._ends, settings.query_num)
        if len(spans) != len(pieces):
            raise EdgevlError("the question itself contains image markers (<image>, <slice>); remove them")

        started = time.perf_counter()
        embeddings = [self.vision.encode(piece) for piece in pieces]
        encoded = time.perf_counter()
        stats.image_encode_ms = 1000 * (encoded - started)
        position, text_start = 0, 0
        for (start, end), embedding in zip(spans, embeddings):
            position = self.decode_tokens(tokens[text_start:start], position, logits_at_end=False)
            position = self._decode_embeddings(embedding, position)
            text_start = end
        position = self.decode_tokens(tokens[text_start:], position, logits_at_end=True)
        stats.prefill_ms = 1000 * (time.perf_counter() - encoded)
        stats.prompt_tokens = len(tokens)
        return position

    def max_slices(self) -> int:
        """The model card's slice limit (9), lowered to fit an image-token budget the caller set: every piece
        (overview or slice) costs query_num tokens, and below two slices an image is seen whole."""
        limit = int(self.card.settings["max_slices"])
        if self.image_max_tokens:
            limit = min(limit, self.image_max_tokens // self.vision_settings.query_num - 1)
        return max(1, limit)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of the whole prompt; special tokens written as text are parsed, BOS added if the model has one."""
        raw = text.encode()
        buffer = (self._llama.llama_token * (len(raw) + 2))()
        count = self._llama.llama_tokenize(self._vocab, raw, len(raw), buffer, len(buffer), True, True)
        if count < 0:
            raise EdgevlError("llama.cpp could not tokenize the prompt")
        return list(buffer[:count])

    def _token_id(self, text: str) -> int:
        tokens = self.tokenize(text)
        content = [t for t in tokens if t != self._llama.llama_vocab_bos(self._vocab)]
        if len(content) != 1:
            raise EdgevlError(f"{self.folder}: {text} is not a single token in this model's vocabulary")
        return content[0]

    def _decode_embeddings(self, embeddings: np.ndarray, position: int) -> int:
        """Decode [n, width] embeddings as n prompt positions, batch by batch; returns the next position."""
        batch = self._embedding_batch
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        for first in range(0, len(embeddings), self.batch_size):
            part = embeddings[first:first + self.batch_size]
            ctypes.memmove(batch.embd, part.ctypes.data, part.nbytes)
            for index in range(len(part)):
                set_batch_slot(batch, index, position + index, logits=False)
            batch.n_tokens = len(part)
            self._decode(batch)
            position += len(part)
        return position
