"""The ONNX Runtime backend: a model folder exported by `edgevl convert --to onnx` (vision, embedding and
decoder graphs), CUDA execution provider when it loads, CPU otherwise.

One request: the family's image hooks (edgevl.families: `OnnxImages`) preprocess and encode the images with the
vision graph and give each image's placeholder text; then the chat prompt is tokenized, the embedding graph puts
the image features in place of the placeholder tokens, the family gives the position ids (Qwen2-VL's M-RoPE), and
a prefill and a token-by-token loop follow. The KV cache stays where ONNX Runtime put it (IO binding): each step's
present keys and values are bound as the next step's past, with no copy through Python.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from pathlib import Path
from collections.abc import Generator, Iterator, Sequence

import numpy as np

from edgevl.engines.base import ModelFolderEngine, StopFilter
from edgevl.engines.structured import TokenMask, llguidance_tokenizer
from edgevl.errors import BackendUnavailable, EdgevlError, ModelError
from edgevl.request import Request, Sampling, Stats
from edgevl.system import default_threads

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")


def choose_providers(device: str) -> tuple[list[str], str]:
    """Execution providers for `device`, and a sentence saying why."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"], "CPU (asked for)"
    if "CUDAExecutionProvider" in available:
        preload_cuda_libraries(onnxruntime)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA execution provider"
    if device == "cuda":
        raise BackendUnavailable(
            "CUDA was asked for but this ONNX Runtime has no CUDA provider: pip uninstall onnxruntime && "
            "pip install 'onnxruntime-gpu[cuda,cudnn]'")
    return ["CPUExecutionProvider"], "CPU: this ONNX Runtime has no CUDA provider (install onnxruntime-gpu)"


def preload_cuda_libraries(onnxruntime) -> None:
    """onnxruntime-gpu finds the CUDA, cuBLAS and cuDNN of NVIDIA's wheels only once they are loaded
    (`preload_dlls`, onnxruntime >= 1.21); a library that is missing shows when the session falls back to the CPU,
    and `edgevl doctor` names it."""
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()  # it prints what it cannot load: that goes to the log, not into the answer's stream
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as error:  # noqa: BLE001 - whatever fails here, the session's own fallback says it again
        log.info("onnxruntime.preload_dlls: %s", error)
    if printed.getvalue().strip():
        log.info("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


class OnnxEngine(ModelFolderEngine):
    format = "onnx"

    def __init__(self, folder: str | Path, *, threads: int | None = None, device: str = "auto",
                 image_max_tokens: int | None = None) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as error:
            raise BackendUnavailable(f"ONNX models need onnxruntime and tokenizers ({error})") from None
        super().__init__(folder, image_max_tokens)
        self.ort = onnxruntime
        try:
            self.config = json.loads(self.manifest.path(self.folder, "config").read_text(encoding="utf-8"))
            self.family_images = self.model_family.onnx_images(self.config)
            self.tokenizer = Tokenizer.from_file(str(self.manifest.path(self.folder, "tokenizer")))
        except ModelError:
            raise
        except Exception as error:  # JSON, missing settings and the tokenizers library's own errors
            raise ModelError(f"{self.folder}: damaged config or tokenizer file ({type(error).__name__}: {error}); "
                             "convert the model again") from None
        providers, reason = choose_providers(device)
        self.sessions = {role: self._session(role, providers, threads or default_threads())
                         for role in ("vision", "embed", "decoder")}
        self.device = "cuda" if self.sessions["decoder"].get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        if device != "cpu" and self.device == "cpu" and providers[0] == "CUDAExecutionProvider":
            reason = "CPU: the CUDA provider failed to load (missing CUDA/cuDNN libraries?)"
        self.device_reason = reason
        log.info("ONNX Runtime: %s", reason)
        self.description = f"ONNX Runtime {self.card.name} {self.manifest.quant} ({self.device.upper()})"
        self._mask_tokenizer = None  # llguidance's index of the vocabulary, built on the first JSON request

    @classmethod
    def open(cls, folder: str | Path, *, threads: int | None, gpu: bool, image_max_tokens: int | None,
             context_size: int) -> OnnxEngine:
        """The KV cache grows as needed, so there is no context size to set."""
        return cls(folder, threads=threads, device="auto" if gpu else "cpu", image_max_tokens=image_max_tokens)

    def _session(self, role: str, providers: list[str], threads: int):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            return self.ort.InferenceSession(str(self.manifest.path(self.folder, role)), options, providers=providers)
        except Exception as error:  # ONNX Runtime raises its own exception types for damaged graphs
            raise ModelError(f"{self.folder}: ONNX Runtime could not load the {role} graph ({error})") from None

    def close(self) -> None:
        self.sessions = {}

    # ---- requests -----------------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Generator[str, None, None]:
        from tokenizers.decoders import DecodeStream

        stops = StopFilter(request.sampling.stop)
        # text token by token; holds back a token that ends inside a multi-byte character
        decoder = DecodeStream(skip_special_tokens=True)
        for token in self.generate_token_ids(request):
            piece = stops.feed(decoder.step(self.tokenizer, token) or "")
            if piece:
                yield piece
            if stops.stopped:
                return
        tail = stops.flush()
        if tail:
            yield tail

    def teacher_forced_logits(self, request: Request, tokens: Sequence[int]) -> np.ndarray:
        logits, binding, position = self._prefill(request)
        rows = [logits]
        for token in tokens:
            rows.append(self._decode_step(token, position, binding))
            position += 1
        return np.stack(rows)

    def generate_token_ids(self, request: Request) -> Iterator[int]:
        mask = self.token_mask(request.json_schema) if request.json_schema is not None else None
        logits, binding_state, next_position = self._prefill(request)
        rng = np.random.default_rng(request.sampling.seed)
        eos = set(self.config["eos_token_ids"])
        started = time.perf_counter()
        try:
            for step in range(request.sampling.max_tokens):
                if mask is not None:
                    mask.apply(logits)
                token = _sample(logits, request.sampling, rng)
                if token in eos:
                    break
                if mask is not None:
                    mask.accept(token)
                self.last_stats.generated_tokens += 1
                yield token
                if step + 1 == request.sampling.max_tokens:
                    break
                logits = self._decode_step(token, next_position, binding_state)
                next_position += 1
        finally:
            self.last_stats.decode_ms = 1000 * (time.perf_counter() - started)

    def token_mask(self, schema: dict) -> TokenMask:
        """The mask that holds the answer to `schema` (llguidance; its view of the tokenizer is built once)."""
        if self._mask_tokenizer is None:
            self._mask_tokenizer = llguidance_tokenizer(self.tokenizer.to_str(), self.config["vocab_size"],
                                                        self.config["eos_token_ids"][0])
        return TokenMask(self._mask_tokenizer, schema)

    # ---- steps --------------------------------------------------------------------------------------------------

    def _prefill(self, request: Request):
        self.last_stats = stats = Stats()
        started = time.perf_counter()
        encoded = self.family_images.encode(request.images, self.image_budget(request.task), self._run_vision)
        stats.image_encode_ms = 1000 * (time.perf_counter() - started)

        started = time.perf_counter()
        # special tokens: the tokenizer adds a BOS where the vocabulary has one (Llama-3), nothing for Qwen2
        input_ids = self.tokenizer.encode(self.prompt(request, encoded.markers), add_special_tokens=True).ids
        if input_ids.count(self.config["image_token_id"]) != len(encoded.features):
            raise EdgevlError("the question itself contains image placeholder tokens (such as <unk> or "
                              "<|image_pad|>); remove them")
        positions = self.family_images.position_ids(input_ids, encoded)
        embeds = self._embed(np.asarray([input_ids], dtype=np.int64), encoded.features)
        binding = self.sessions["decoder"].io_binding()
        logits = self._run_decoder(binding, embeds, positions[:, None, :], past=None)
        stats.prompt_tokens = len(input_ids)
        stats.prefill_ms = 1000 * (time.perf_counter() - started)
        return logits, binding, int(positions.max()) + 1

    def _run_vision(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.sessions["vision"].run(None, inputs)[0]

    def _no_features(self) -> np.ndarray:
        return np.zeros((0, self.config["hidden_size"]), dtype=np.float32)

    def _embed(self, input_ids: np.ndarray, features: np.ndarray) -> np.ndarray:
        return self.sessions["embed"].run(None, {"input_ids": input_ids, "image_features": features})[0]

    def _decode_step(self, token: int, position: int, binding) -> np.ndarray:
        embeds = self._embed(np.asarray([[token]], dtype=np.int64), self._no_features())
        positions = np.full((self.family_images.position_axes, 1, 1), position, dtype=np.int64)
        return self._run_decoder(binding, embeds, positions, past=binding.get_outputs()[1:])

    def _run_decoder(self, binding, embeds: np.ndarray, positions: np.ndarray, past) -> np.ndarray:
        """One decoder call. `past` is the previous call's present OrtValues (None for the prefill)."""
        config, device = self.config, self.device
        session = self.sessions["decoder"]
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input("inputs_embeds", embeds)
        binding.bind_cpu_input("position_ids", positions)
        names = [f"past.{i}.{kind}" for i in range(config["num_layers"]) for kind in ("key", "value")]
        if past is None:
            empty = np.zeros((1, config["num_kv_heads"], 0, config["head_dim"]), dtype=np.float32)
            past = [self.ort.OrtValue.ortvalue_from_numpy(empty, device) for _ in names]
        for name, value in zip(names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in names:
            binding.bind_output(name.replace("past.", "present."), device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()[0, -1]


def _sample(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    scaled = (logits - logits.max()) / sampling.temperature
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities)
    keep = order[: int(np.searchsorted(np.cumsum(probabilities[order]), sampling.top_p)) + 1]
    return int(rng.choice(keep, p=probabilities[keep] / probabilities[keep].sum()))
