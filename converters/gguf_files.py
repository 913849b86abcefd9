"""GGUF output: quant levels, streaming tensor writes, the BPE vocabulary, and llama.cpp's own quantizer.

f32 / f16 / bf16 / q8_0 are written directly with the `gguf` package. The K-quants (q4_k_m, q5_k_m, q6_k) are
made from a lossless intermediate GGUF by `llama_model_quantize` from llama-cpp-python - the same code as the
`llama-quantize` tool, so the files are bit-identical to what llama.cpp users get.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QType
from gguf import LlamaFileType

from edgevl.converters.checkpoint import LazyTensor
from edgevl.errors import CheckpointError, EdgevlError
from edgevl.llamacpp_lib import load_llama_cpp


@dataclass(frozen=True)
class Quant:
    """A quant level a user can ask for."""

    name: str
    file_type: LlamaFileType
    direct: QType | None = None  # tensor type when we write it ourselves
    llama_ftype: int | None = None  # llama_ftype for llama.cpp's quantizer

    @property
    def label(self) -> str:
        return self.name.upper()

    @property
    def written(self) -> QType:
        """The tensor type of a direct quant; the K-quants are made by llama.cpp's quantizer from an f16 file."""
        if self.direct is None:
            raise ValueError(f"{self.name} is not written directly: llama.cpp's quantizer makes it")
        return self.direct


QUANTS = {
    quant.name: quant
    for quant in (
        Quant("f32", LlamaFileType.ALL_F32, direct=QType.F32),
        Quant("f16", LlamaFileType.MOSTLY_F16, direct=QType.F16),
        Quant("bf16", LlamaFileType.MOSTLY_BF16, direct=QType.BF16),
        Quant("q8_0", LlamaFileType.MOSTLY_Q8_0, direct=QType.Q8_0),
        Quant("q6_k", LlamaFileType.MOSTLY_Q6_K, llama_ftype=18),
        Quant("q5_k_m", LlamaFileType.MOSTLY_Q5_K_M, llama_ftype=17),
        Quant("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M, llama_ftype=15),
    )
}
#: The vision projector: quantizing it is the most reported cause of OCR loss, so f16 by default.
VISION_QUANTS = ("f16", "f32", "q8_0")

#: What a K-quant is made from: the checkpoint's own precision, so the intermediate loses nothing.
INTERMEDIATE_FOR_DTYPE = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def intermediate_quant(source_dtype: str) -> Quant:
    """The lossless intermediate a K-quant is made from, for a checkpoint of `source_dtype` (safetensors name)."""
    return QUANTS[INTERMEDIATE_FOR_DTYPE.get(source_dtype, "f32")]


def parse_quant(name: str, allowed: Sequence[str] = tuple(QUANTS)) -> Quant:
    key = name.lower().replace("-", "_")
    if key not in allowed:
        raise EdgevlError(f"unknown quant {name!r}; choose one of: {', '.join(allowed)}")
    return QUANTS[key]


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output file: its GGUF name, shape (numpy order), storage type and how to compute it."""

    name: str
    shape: tuple[int, ...]
    qtype: QType
    compute: Callable[[], np.ndarray]
    #: rows start:stop of what `compute` gives, where they can be read alone (a checkpoint tensor as it is)
    rows: Callable[[int, int], np.ndarray] | None = None

    @classmethod
    def of(cls, name: str, source: LazyTensor, qtype: QType) -> PlannedTensor:
        """A checkpoint tensor stored as it is, readable a block of rows at a time."""
        return cls(name, source.shape, qtype, source.load, source.load_rows)

    def byte_shape(self) -> tuple[int, ...]:
        if self.qtype in (QType.F32, QType.F16):
            return self.shape
        return tuple(gguf.quant_shape_to_byte_shape(self.shape, self.qtype))

    def nbytes(self) -> int:
        item = {QType.F32: 4, QType.F16: 2}.get(self.qtype, 1)
        return int(np.prod(self.byte_shape(), dtype=np.int64)) * item

    def encode(self) -> np.ndarray:
        return self._encoded(self.compute(), self.shape)

    def encoded_blocks(self, block_bytes: int = 1 << 26) -> Iterator[np.ndarray]:
        """The encoded tensor a block of rows at a time where it can be read by rows, else whole: the peak is then
        a block, not the tensor and its copies (a 7B's embedding is 2.2 GB in float32). Every GGUF type
        quantizes row by row, so the blocks put together are the whole tensor encoded."""
        if self.rows is None or len(self.shape) < 2:
            yield self.encode()
            return
        step = max(1, block_bytes // (4 * int(np.prod(self.shape[1:]))))
        for start in range(0, self.shape[0], step):
            stop = min(start + step, self.shape[0])
            yield self._encoded(self.rows(start, stop), (stop - start, *self.shape[1:]))

    def _encoded(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        data = np.asarray(values, dtype=np.float32)
        if data.shape != shape:
            raise CheckpointError(f"tensor {self.name}: shape {data.shape}, expected {shape}")
        if self.qtype == QType.F32:
            return data
        if self.qtype == QType.F16:
            return data.astype(np.float16)
        return gguf.quants.quantize(data, self.qtype)


def load_part(source: LazyTensor, part: tuple[slice | int, ...] | slice) -> Callable[[], np.ndarray]:
    """A PlannedTensor's compute function that loads `source` and keeps `part` of it (one piece of a fused tensor)."""
    return lambda: source.load()[part]


def storage_type(shape: tuple[int, ...], wanted: QType) -> QType:
    """Type a tensor is stored as when `wanted` is asked for: 1-D tensors (norms, biases) stay F32 as llama.cpp
    expects; block quants need rows that are a multiple of their block size, else F16."""
    if len(shape) <= 1:
        return QType.F32
    if wanted not in (QType.F32, QType.F16, QType.BF16):
        block_size, _ = gguf.GGML_QUANT_SIZES[wanted]
        if shape[-1] % block_size:
            return QType.F16
    return wanted


def write_gguf(
    path: Path,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Sequence[PlannedTensor],
    on_tensor: Callable[[PlannedTensor], None] = lambda tensor: None,
) -> None:
    """Write a GGUF file, computing and writing one tensor at a time (peak memory: the largest tensor)."""
    writer = gguf.GGUFWriter(path=None, arch=arch)
    add_metadata(writer)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor in tensors:
        raw_dtype = None if tensor.qtype in (QType.F32, QType.F16) else tensor.qtype
        numpy_dtype = np.dtype({QType.F32: np.float32, QType.F16: np.float16}.get(tensor.qtype, np.uint8))
        writer.add_tensor_info(tensor.name, tensor.byte_shape(), numpy_dtype, tensor.nbytes(), raw_dtype=raw_dtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(cast(np.ndarray, _BlockWriter(tensor)))
        on_tensor(tensor)
    writer.close()


class _BlockWriter:
    """What GGUFWriter.write_tensor_data uses of an array (its byte count and tofile), writing the tensor a
    block of rows at a time (PlannedTensor.encoded_blocks)."""

    def __init__(self, tensor: PlannedTensor) -> None:
        self.tensor = tensor
        self.nbytes = tensor.nbytes()

    def tofile(self, out) -> None:
        for block in self.tensor.encoded_blocks():
            block.tofile(out)


def add_decoder_metadata(writer: gguf.GGUFWriter, text: dict, quant: Quant, name: str, rope_theta: float) -> None:
    """The settings every decoder-only language model GGUF carries, from the checkpoint's (flat) text config."""
    writer.add_name(name)
    writer.add_quantized_by("edgevl")
    writer.add_file_type(quant.file_type)
    writer.add_block_count(text["num_hidden_layers"])
    writer.add_context_length(text.get("max_position_embeddings", 32768))
    writer.add_embedding_length(text["hidden_size"])
    writer.add_feed_forward_length(text["intermediate_size"])
    writer.add_head_count(text["num_attention_heads"])
    writer.add_head_count_kv(text.get("num_key_value_heads", text["num_attention_heads"]))
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(text.get("rms_norm_eps", 1e-6))


@dataclass(frozen=True)
class VisionTower:
    """What every mmproj GGUF says about its vision encoder, in llama.cpp's clip keys."""

    projector_type: str  # llama.cpp's name: "qwen2vl_merger", "resampler", ...
    projection_dim: int  # the language model's width
    image_size: int
    patch_size: int
    width: int
    feed_forward: int
    blocks: int
    heads: int
    layer_norm_eps: float
    mean: Sequence[float]
    std: Sequence[float]


def add_vision_metadata(writer: gguf.GGUFWriter, tower: VisionTower, quant: Quant, name: str) -> None:
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(f"{name} vision projector")
    writer.add_quantized_by("edgevl")
    writer.add_file_type(quant.file_type)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(tower.projector_type)
    writer.add_vision_projection_dim(tower.projection_dim)
    writer.add_vision_image_size(tower.image_size)
    writer.add_vision_patch_size(tower.patch_size)
    writer.add_vision_embedding_length(tower.width)
    writer.add_vision_feed_forward_length(tower.feed_forward)
    writer.add_vision_block_count(tower.blocks)
    writer.add_vision_head_count(tower.heads)
    writer.add_vision_attention_layernorm_eps(tower.layer_norm_eps)
    writer.add_vision_image_mean(list(tower.mean))
    writer.add_vision_image_std(list(tower.std))


def add_bpe_vocab(writer: gguf.GGUFWriter, folder: Path, vocab_size: int, pre_tokenizer: str) -> None:
    """A GPT-2 style byte-level BPE vocabulary from tokenizer.json, padded to the embedding rows.

    Added tokens marked special become CONTROL tokens (never produced by splitting text); padding rows that no
    token uses become UNUSED. Merges, special ids and the chat template come from gguf's SpecialVocab.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: tokenizer.json is missing; copy the whole checkpoint folder")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    if tokenizer.get("model", {}).get("type") != "BPE":
        raise CheckpointError(f"{path}: expected a BPE tokenizer")
    # an added token wins over a BPE token of the same text (as in the tokenizer's own vocabulary): llama.cpp
    # needs every text once, and the BPE token's old id becomes an unused row
    token_to_id = dict(tokenizer["model"]["vocab"])
    token_to_id.update({entry["content"]: entry["id"] for entry in tokenizer.get("added_tokens", [])})
    id_to_token = {token_id: token for token, token_id in token_to_id.items()}
    special = {entry["id"] for entry in tokenizer.get("added_tokens", []) if entry.get("special")}
    if max(id_to_token) >= vocab_size:
        raise CheckpointError(f"{path}: token id {max(id_to_token)} does not fit the {vocab_size} embedding rows")

    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id not in id_to_token:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(id_to_token[token_id])
            types.append(gguf.TokenType.CONTROL if token_id in special else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


#: the rows llama.cpp's quantizer holds at once, in bytes (source, float32 copy and result): its default, 8 GiB,
#: takes a 7B's 543M-value embedding in one piece (q4_k_m at MiniCPM-V 2.6's widths: 3.73 GB peak, 1.36 GB with
#: this cap); rows quantize independently, so the file is the same
QUANTIZE_BUFFER_BYTES = 256 << 20


def quantize_with_llama_cpp(source: Path, destination: Path, quant: Quant, threads: int = 0) -> None:
    """Run llama.cpp's quantizer (the code behind `llama-quantize`) on a GGUF file."""
    llama_cpp = load_llama_cpp(f"Writing {quant.label}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = quant.llama_ftype
    params.nthread = threads
    params.max_buf_size = QUANTIZE_BUFFER_BYTES
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(destination).encode(), ctypes.byref(params))
    if status != 0:
        raise EdgevlError(f"llama.cpp could not quantize {source.name} to {quant.label} (status {status})")
