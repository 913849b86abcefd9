"""The llama.cpp backend: a converted GGUF model folder (language model + mmproj) driven through
llama-cpp-python's low-level bindings and libmtmd.

One request: preprocess the images (the family's resize, edgevl.families), format the chat prompt with one
media marker per image, let mtmd split it into text and image chunks, encode the images, decode the prompt, then
sample token by token and stream the text. Everything C-side (model, context, mtmd context, batch) is owned here
and freed in `close()`; per-request objects (bitmaps, chunks, sampler) are freed at the end of each request, so
memory does not grow over repeated calls.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path
from collections.abc import Generator, Iterator, Sequence

import numpy as np
from PIL import Image

from edgevl.engines.base import ModelFolderEngine, StopFilter
from edgevl.engines.structured import gbnf_grammar
from edgevl.errors import EdgevlError, ModelError, SchemaError
from edgevl.llamacpp_lib import INSTALL_HINT, load_llama_cpp
from edgevl.request import Request, Sampling
from edgevl.system import default_threads

log = logging.getLogger(__name__)
ALL_LAYERS = 999  # n_gpu_layers meaning "everything"


class LlamaCppEngine(ModelFolderEngine):
    format = "gguf"

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = None,
        gpu: bool = True,
        context_size: int = 8192,
        batch_size: int = 512,
        image_max_tokens: int | None = None,
    ) -> None:
        super().__init__(folder, image_max_tokens)
        self.threads = threads or default_threads()
        self.batch_size = batch_size
        self._llama = load_llama_cpp("Running GGUF models")
        from llama_cpp import mtmd_cpp  # importable once load_llama_cpp succeeded

        self._mtmd = mtmd_cpp
        self._resources = ExitStack()  # C objects, freed in reverse order by close()
        try:
            self._load(gpu, context_size)
        except BaseException:
            self.close()
            raise

    # ---- loading ------------------------------------------------------------------------------------------------

    def _load(self, gpu: bool, context_size: int) -> None:
        llama = self._llama
        llama.llama_backend_init()
        self.gpu_offload, self.device_reason = _gpu_decision(llama, gpu)
        self.device = "gpu" if self.gpu_offload else "cpu"
        log.info("llama.cpp: %s", self.device_reason)

        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = ALL_LAYERS if self.gpu_offload else 0
        text_path = self.manifest.path(self.folder, "text")
        self._model = llama.llama_model_load_from_file(str(text_path).encode(), model_params)
        if not self._model:
            raise ModelError(f"{text_path}: llama.cpp could not load it (damaged file or unsupported model)")
        self._resources.callback(llama.llama_model_free, self._model)

        context_params = llama.llama_context_default_params()
        context_params.n_ctx = context_size
        context_params.n_batch = context_params.n_ubatch = self.batch_size
        context_params.n_threads = context_params.n_threads_batch = self.threads
        if self.manifest.quant == "f32":
            # a full-precision model keeps a full-precision KV cache (f16 would cost it its exactness)
            context_params.type_k = context_params.type_v = llama.GGML_TYPE_F32
            context_params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = llama.llama_init_from_model(self._model, context_params)
        if not self._ctx:
            raise ModelError(f"llama.cpp could not create a context of {context_size} tokens (out of memory?)")
        self._resources.callback(llama.llama_free, self._ctx)
        self.context_size = llama.llama_n_ctx(self._ctx)

        self._batch = llama.llama_batch_init(self.batch_size, 0, 1)
        self._resources.callback(llama.llama_batch_free, self._batch)
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.vocab_size = llama.llama_vocab_n_tokens(self._vocab)
        self.description = (f"llama.cpp {self.card.name} {self.manifest.quant.upper()} ({self.device.upper()}, "
                            f"{self.threads} threads)")
        self._load_vision(gpu)

    def _load_vision(self, gpu: bool) -> None:
        """The vision projector, through libmtmd (which also tokenizes prompts with images); on the GPU when
        the language model is."""
        mtmd = self._mtmd
        mtmd_params = mtmd.mtmd_context_params_default()
        mtmd_params.use_gpu = self.gpu_offload
        mtmd_params.n_threads = self.threads
        mtmd_params.print_timings = False
        mtmd_params.warmup = False
        # accept any grid our own preprocessing produces, so mtmd never resizes again
        mtmd_params.image_min_tokens = int(self.card.settings.get("image_min_tokens", 1))
        mtmd_params.image_max_tokens = 16384
        mmproj_path = self.manifest.path(self.folder, "mmproj")
        self._mctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), self._model, mtmd_params)
        if not self._mctx:
            raise ModelError(f"{mmproj_path}: libmtmd could not load the vision projector")
        self._resources.callback(mtmd.mtmd_free, self._mctx)
        self._marker = mtmd.mtmd_default_marker().decode()

    def close(self) -> None:
        self._resources.close()

    # ---- requests -----------------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Generator[str, None, None]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(request.sampling.stop)
        piece = ctypes.create_string_buffer(256)
        for token in self.generate_token_ids(request):
            length = self._llama.llama_token_to_piece(self._vocab, token, piece, len(piece), 0, False)
            text = stops.feed(decoder.decode(piece.raw[:max(0, length)]))
            if text:
                yield text
            if stops.stopped:
                return
        tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        if tail:
            yield tail

    def generate_token_ids(self, request: Request) -> Iterator[int]:
        """The answer as token ids, up to the end-of-generation token or max_tokens."""
        n_past = self._prefill(request)
        llama, stats = self._llama, self.last_stats
        sampler = RequestSampler(llama, self._vocab, request)
        started = time.perf_counter()
        try:
            for _ in range(request.sampling.max_tokens):
                token = sampler.sample(self._ctx)
                if llama.llama_vocab_is_eog(self._vocab, token):
                    break
                stats.generated_tokens += 1
                yield token
                if n_past + 1 >= self.context_size:
                    break
                self._decode_one(token, n_past)
                n_past += 1
        finally:
            stats.decode_ms = 1000 * (time.perf_counter() - started)
            sampler.free()

    def teacher_forced_logits(self, request: Request, tokens: Sequence[int]) -> np.ndarray:
        position = self._prefill(request)
        rows = [self._last_logits()]
        for token in tokens:
            self._decode_one(token, position)
            position += 1
            rows.append(self._last_logits())
        return np.stack(rows)

    def _last_logits(self) -> np.ndarray:
        logits = self._llama.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.vocab_size,)).copy()

    def prepare_images(self, images: tuple[Image.Image, ...], task: str) -> list[Image.Image]:
        """Resize as the family's reference does, within the model card's image-token budget for the task."""
        budget = self.image_budget(task)
        return [self.model_family.resize(image, budget) for image in images]

    def _prefill(self, request: Request) -> int:
        """Clear the cache, evaluate prompt and images; returns the next position."""
        llama, mtmd = self._llama, self._mtmd
        llama.llama_memory_clear(llama.llama_get_memory(self._ctx), True)
        self.last_stats = stats = type(self.last_stats)()
        images = self.prepare_images(request.images, request.task)
        prompt = self.prompt(request, [self._marker] * len(images))

        with ExitStack() as request_resources:
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(images)))()
            for index, image in enumerate(images):
                rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
                bitmaps[index] = mtmd.mtmd_bitmap_init(image.width, image.height,
                                                       rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
                request_resources.callback(mtmd.mtmd_bitmap_free, bitmaps[index])
            chunks = mtmd.mtmd_input_chunks_init()
            request_resources.callback(mtmd.mtmd_input_chunks_free, chunks)
            text = mtmd.mtmd_input_text(prompt.encode(), len(prompt.encode()), True, True)
            status = mtmd.mtmd_tokenize(self._mctx, chunks, ctypes.byref(text), bitmaps, len(images))
            if status != 0:
                raise EdgevlError(f"libmtmd could not tokenize the prompt with {len(images)} image(s) "
                                  f"(status {status})")
            return self._eval_chunks(chunks, stats)

    def _eval_chunks(self, chunks, stats) -> int:
        """Evaluate chunk by chunk, timing image encoding separately from prompt decoding."""
        llama, mtmd = self._llama, self._mtmd
        n_past = llama.llama_pos(0)
        n_chunks = mtmd.mtmd_input_chunks_size(chunks)
        total_tokens = mtmd.mtmd_helper_get_n_tokens(chunks)
        if total_tokens >= self.context_size:
            raise EdgevlError(f"the prompt needs {total_tokens} tokens but the context holds {self.context_size}; "
                              "lower the image-token budget or raise the context size")
        for index in range(n_chunks):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            is_last = index == n_chunks - 1
            started = time.perf_counter()
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                if mtmd.mtmd_encode_chunk(self._mctx, chunk) != 0:
                    raise EdgevlError("libmtmd failed to encode an image")
                encoded = time.perf_counter()
                stats.image_encode_ms += 1000 * (encoded - started)
                status = mtmd.mtmd_helper_decode_image_chunk(
                    self._mctx, self._ctx, chunk, mtmd.mtmd_get_output_embd(self._mctx), n_past, 0,
                    self.batch_size, ctypes.byref(n_past), mtmd.mtmd_helper_post_decode_callback(), None)
                stats.prefill_ms += 1000 * (time.perf_counter() - encoded)
            else:
                status = mtmd.mtmd_helper_eval_chunk_single(
                    self._mctx, self._ctx, chunk, n_past, 0, self.batch_size, is_last, ctypes.byref(n_past))
                stats.prefill_ms += 1000 * (time.perf_counter() - started)
            if status != 0:
                raise EdgevlError(f"llama.cpp failed to evaluate the prompt (status {status})")
        stats.prompt_tokens = total_tokens
        return n_past.value

    def _decode_one(self, token: int, position: int) -> None:
        # text after images: llama.cpp spreads a 1-D position over M-RoPE's sections
        self.decode_tokens([token], position, logits_at_end=True)

    def decode_tokens(self, tokens: list[int], position: int, logits_at_end: bool) -> int:
        """Decode text tokens from `position` on, batch by batch; returns the next position."""
        batch = self._batch
        for first in range(0, len(tokens), self.batch_size):
            part = tokens[first:first + self.batch_size]
            for index, token in enumerate(part):
                batch.token[index] = token
                set_batch_slot(batch, index, position + index, logits=False)
            batch.logits[len(part) - 1] = logits_at_end and first + len(part) == len(tokens)
            batch.n_tokens = len(part)
            self._decode(batch)
            position += len(part)
        return position

    def _decode(self, batch) -> None:
        if self._llama.llama_decode(self._ctx, batch) != 0:
            raise EdgevlError("llama.cpp failed to decode (context full?)")


def set_batch_slot(batch, index: int, position: int, logits: bool) -> None:
    """Slot `index` of a llama_batch: its position, sequence 0, and whether to keep its logits."""
    batch.pos[index] = position
    batch.n_seq_id[index] = 1
    batch.seq_id[index][0] = 0
    batch.logits[index] = logits


class RequestSampler:
    """The request's sampling settings as llama.cpp samplers, held to the request's JSON schema if it has one.

    llama.cpp's grammar check walks every candidate it is shown, milliseconds per token at a 150k vocabulary.
    So the token is sampled freely first and only it is shown to the grammar; all candidates are filtered and
    the token sampled again only when the grammar rejects it (as llama.cpp's own common sampler does).
    """

    def __init__(self, llama, vocab, request: Request) -> None:
        self._llama = llama
        self._free = _make_sampler(llama, request.sampling)
        self._grammar = None
        if request.json_schema is None:
            return
        grammar = llama.llama_sampler_init_grammar(vocab, gbnf_grammar(request.json_schema).encode(), b"root")
        if not grammar:
            self.free()
            raise SchemaError("llama.cpp could not parse the grammar made from the JSON schema")
        self._grammar = grammar
        self._constrained = _make_sampler(llama, request.sampling, grammar)  # the chain owns the grammar now
        self._candidate = llama.llama_token_data()
        self._one = llama.llama_token_data_array(ctypes.pointer(self._candidate), 1, -1, False)

    def sample(self, ctx) -> int:
        llama = self._llama
        token = llama.llama_sampler_sample(self._free, ctx, -1)
        if self._grammar is None:
            return token
        if self._grammar_allows(token):
            llama.llama_sampler_accept(self._grammar, token)
            return token
        return llama.llama_sampler_sample(self._constrained, ctx, -1)  # also advances the grammar

    def _grammar_allows(self, token: int) -> bool:
        self._candidate.id, self._candidate.logit, self._candidate.p = token, 0.0, 0.0
        self._one.size, self._one.selected = 1, -1
        self._llama.llama_sampler_apply(self._grammar, ctypes.byref(self._one))
        return not math.isinf(self._candidate.logit)

    def free(self) -> None:
        self._llama.llama_sampler_free(self._free)
        if self._grammar is not None:
            self._llama.llama_sampler_free(self._constrained)


def _make_sampler(llama, sampling: Sampling, *first):
    """A sampler chain for `sampling`, with the samplers `first` (a grammar) in front."""
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    for sampler in first:
        llama.llama_sampler_chain_add(chain, sampler)
    if sampling.temperature <= 0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
    else:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(sampling.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(sampling.temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(sampling.seed))
    return chain


def _gpu_decision(llama, wanted: bool) -> tuple[bool, str]:
    if not wanted:
        return False, "CPU only (GPU offload turned off)"
    if not llama.llama_supports_gpu_offload():
        return False, f"CPU only: this llama-cpp-python build has no GPU backend. For CUDA: {INSTALL_HINT}"
    return True, "GPU offload: all layers and the vision projector"
