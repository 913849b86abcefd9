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
import time
from contextlib import ExitStack
from pathlib import Path
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edgevl.engines.base import ModelFolderEngine, StopFilter
from edgevl.engines.structured import TokenMask, llguidance_tokenizer_from_llama_vocab
from edgevl.errors import EdgevlError, ModelError
from edgevl.llamacpp_lib import has_cuda_backend, load_llama_cpp
from edgevl.request import Request, Sampling
from edgevl.system import default_threads

if TYPE_CHECKING:
    from edgevl.engines.qwen2vl_vision import Qwen2VLVision

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
        onnx_vision: bool = False,
    ) -> None:
        super().__init__(folder, image_max_tokens)
        self.threads = threads or default_threads()
        self.batch_size = batch_size
        self._onnx_vision_wanted = onnx_vision
        self._vision: Qwen2VLVision | None = None  # replaces libmtmd's encoder where set (_load_onnx_vision)
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
        self._mask_tokenizer = None  # llguidance's index of the vocabulary, built on the first JSON request
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
        self._load_onnx_vision(mmproj_path)

    def _load_onnx_vision(self, mmproj_path: Path) -> None:
        """`onnx_vision=True` on the CPU: Qwen2-VL's vision tower on ONNX Runtime with float32 weights instead of
        libmtmd's f16 clip, at the same answers. Not the default: it was only 1.10-1.18x faster per encode once
        warm, no faster on a process's first image, and it holds the vision weights twice (float32 here, f16 in
        libmtmd, which still tokenizes and places the image): 2.3x the peak RSS and +4 s load on a 3-layer model
        (benchmarks/README.md, "`bench_vision.py`"). Worth it only for long-running processes with RAM to spare.
        Other projectors than Qwen2-VL's are refused with a ModelError."""
        if not self._onnx_vision_wanted or self.gpu_offload:
            return
        from edgevl.engines.qwen2vl_vision import Qwen2VLVision

        vision = self._vision = Qwen2VLVision(mmproj_path, self.threads)
        self._resources.callback(vision.close)

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
        mask = self.token_mask(request.json_schema) if request.json_schema is not None else None
        n_past = self._prefill(request)
        llama, stats = self._llama, self.last_stats
        sampler = _make_sampler(llama, request.sampling)
        started = time.perf_counter()
        try:
            for _ in range(request.sampling.max_tokens):
                if mask is not None:  # llama.cpp's samplers read the logits after the mask has set them
                    mask.apply(self._next_token_logits())
                token = llama.llama_sampler_sample(sampler, self._ctx, -1)
                if llama.llama_vocab_is_eog(self._vocab, token):
                    break
                if mask is not None:
                    mask.accept(token)
                stats.generated_tokens += 1
                yield token
                if n_past + 1 >= self.context_size:
                    break
                self._decode_one(token, n_past)
                n_past += 1
        finally:
            stats.decode_ms = 1000 * (time.perf_counter() - started)
            llama.llama_sampler_free(sampler)

    def token_mask(self, schema: dict) -> TokenMask:
        """The mask that holds the answer to `schema` (llguidance; its view of the vocabulary is built once)."""
        if self._mask_tokenizer is None:
            self._mask_tokenizer = llguidance_tokenizer_from_llama_vocab(self._vocab)
        return TokenMask(self._mask_tokenizer, schema)

    def _next_token_logits(self) -> np.ndarray:
        """llama.cpp's logits of the next token, in place (not a copy)."""
        logits = self._llama.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.vocab_size,))

    def teacher_forced_logits(self, request: Request, tokens: Sequence[int]) -> np.ndarray:
        position = self._prefill(request)
        rows = [self._next_token_logits().copy()]
        for token in tokens:
            self._decode_one(token, position)
            position += 1
            rows.append(self._next_token_logits().copy())
        return np.stack(rows)

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
            return self._eval_chunks(chunks, stats, images)

    def _eval_chunks(self, chunks, stats, images: list[Image.Image]) -> int:
        """Evaluate chunk by chunk, timing image encoding separately from prompt decoding."""
        llama, mtmd = self._llama, self._mtmd
        n_past = llama.llama_pos(0)
        images_left = iter(images)  # image chunks come in the order of the images
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
                embeddings = self._encode_image(chunk, next(images_left))
                encoded = time.perf_counter()
                stats.image_encode_ms += 1000 * (encoded - started)
                status = mtmd.mtmd_helper_decode_image_chunk(
                    self._mctx, self._ctx, chunk, embeddings, n_past, 0,
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

    def _encode_image(self, chunk, image: Image.Image):
        """The image chunk's embeddings, as the float pointer mtmd's decode helper takes."""
        mtmd = self._mtmd
        if self._vision is None:
            if mtmd.mtmd_encode_chunk(self._mctx, chunk) != 0:
                raise EdgevlError("libmtmd failed to encode an image")
            return mtmd.mtmd_get_output_embd(self._mctx)
        self._embeddings = embeddings = self._vision.encode(image)  # kept alive until the next image
        if len(embeddings) != mtmd.mtmd_input_chunk_get_n_tokens(chunk):
            raise EdgevlError(f"the vision encoder made {len(embeddings)} image tokens where libmtmd placed "
                              f"{mtmd.mtmd_input_chunk_get_n_tokens(chunk)}")
        return embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

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


def _make_sampler(llama, sampling: Sampling):
    """A sampler chain for `sampling`."""
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
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
        if has_cuda_backend():  # ggml starts no CUDA backend without a GPU and its driver
            return False, "CPU only: CUDA build, but no usable NVIDIA GPU (`edgevl doctor` says why)"
        return False, ("CPU only: this llama-cpp-python build has no GPU backend. For CUDA: "
                       "pip install 'edgevl[cuda]' && edgevl doctor --fix")
    return True, "GPU offload: all layers and the vision projector"
