"""How much disk a conversion needs, known before it starts, and the refusal when the disk lacks it.

The estimate comes from the checkpoint's tensor shapes (the safetensors headers, read lazily; no weights) through
the converter's own GGUF plans - the same tensors every family's GGUF and ONNX outputs are made of - and from the
chosen format and quant. Everything a conversion writes goes into the staging folder beside the output
(converters/output.py): the model files and the scratch removed at the end (a K-quant's lossless intermediate
GGUF, the ONNX export's staged graphs). So all of it must fit on the output folder's disk at once: at Qwen2-VL-7B,
ONNX int4 stages 16.6 GB of bf16 graphs beside its 7.3 GB of files. Without this check a full disk fails
cleanly (converters/output.py), but only after minutes of work.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import gguf
from gguf import GGMLQuantizationType as QType

from edgevl.converters.base import Converter
from edgevl.converters.gguf_files import QUANTS, PlannedTensor, Quant, intermediate_quant
from edgevl.converters.onnx_files import Int4Options
from edgevl.errors import EdgevlError
from edgevl.system import nearest_existing

#: room asked for beyond the estimate: the estimate is within 2 % of the real-size files the README measured
#: (tests/test_disk_space.py), and file-system blocks, the small files (manifest, model.json) and other programs
#: writing to the same disk meanwhile come on top
MARGIN = 1.10

#: GGUF names of the language model's embedding table and output projection (absent where tied to the embedding)
EMBEDDING, OUTPUT = "token_embd.weight", "output.weight"

#: the base type of each llama.cpp K-quant (llama_tensor_get_type keeps some tensors at more bits, see _k_quant_bits)
K_QUANT_TYPES = {"q4_k_m": QType.Q4_K, "q5_k_m": QType.Q5_K, "q6_k": QType.Q6_K}
#: what llama.cpp stores a tensor as when its rows are not whole K-quant blocks: at most Q8_0
K_QUANT_FALLBACK = QType.Q8_0


@dataclass(frozen=True)
class DiskNeeds:
    """Bytes a conversion writes: the model folder's files and the scratch beside them, removed at the end."""

    files: int
    scratch: int

    @property
    def total(self) -> int:
        return self.files + self.scratch


def estimate(converter: Converter, to: str, quant: str, vision_quant: str, int4: Int4Options) -> DiskNeeds:
    """What converting `converter`'s checkpoint to `to` ("gguf" / "onnx") at `quant` writes; `vision_quant` is the
    GGUF vision projector's (ONNX fixes its own: converters.convert)."""
    # both formats carry the vocabulary: ONNX copies tokenizer.json, GGUF stores its tokens and merges
    tokenizer = converter.checkpoint.folder / "tokenizer.json"
    vocabulary = tokenizer.stat().st_size if tokenizer.is_file() else 0
    if to == "gguf":
        return _gguf_needs(converter, QUANTS[quant], QUANTS[vision_quant], vocabulary)
    return _onnx_needs(converter, quant, int4, vocabulary)


def require_room(destination: Path, needs: DiskNeeds) -> None:
    """Raise, before anything is written, when the disk of `destination`'s folder has not the room `needs` (and the
    margin) asks for: one line naming the folder, the sizes and what to do."""
    folder = nearest_existing(destination.expanduser().absolute().parent)
    free = shutil.disk_usage(folder).free
    wanted = needs.total * MARGIN
    if wanted <= free:
        return
    parts = f"{_gb(needs.files)} of model files" + (
        f" + {_gb(needs.scratch)} of scratch, removed at the end" if needs.scratch else "")
    raise EdgevlError(f"not enough disk space in {folder}: this conversion needs about {_gb(wanted)} free there "
                      f"({parts}, plus {MARGIN - 1:.0%} head room) and {_gb(free)} is free; free some space or "
                      "choose an output folder on a disk with more room")


def _gb(count: float) -> str:
    return f"{count / 1e9:,.1f} GB"


# ---- GGUF ---------------------------------------------------------------------------------------------------------

def _gguf_needs(converter: Converter, text_quant: Quant, vision: Quant, vocabulary: int) -> DiskNeeds:
    mmproj = _planned_bytes(converter.vision_plan(vision).tensors)
    if text_quant.direct is not None:  # written by edgevl: the plan's sizes are the file's
        return DiskNeeds(mmproj + _planned_bytes(converter.text_plan(text_quant).tensors) + vocabulary, 0)
    # a K-quant: the intermediate in the checkpoint's precision is written first, then llama.cpp's quantizer
    intermediate = converter.text_plan(intermediate_quant(converter.source_dtype())).tensors
    text = _k_quant_bytes(intermediate, text_quant)
    return DiskNeeds(mmproj + text + vocabulary, _planned_bytes(intermediate) + vocabulary)


def _planned_bytes(tensors: list[PlannedTensor]) -> int:
    return sum(tensor.nbytes() for tensor in tensors)


def _k_quant_bytes(tensors: list[PlannedTensor], quant: Quant) -> int:
    """The size of llama.cpp's `quant` file of `tensors`, from its rules for which tensor gets which type."""
    names = {tensor.name for tensor in tensors}
    output = OUTPUT if OUTPUT in names else EMBEDDING  # a tied embedding is the output projection too
    return round(sum(_values(tensor) * _k_quant_bits(tensor, quant, tensor.name == output) / 8
                     for tensor in tensors))


def _k_quant_bits(tensor: PlannedTensor, quant: Quant, is_output: bool) -> float:
    """Bits per value of one tensor in llama.cpp's `quant` file (llama_tensor_get_type): vectors stay F32, the
    output projection is Q6_K, and the _M mixes give attn_v and ffn_down Q6_K in about half the layers (the first
    and last eighth and every third one between)."""
    base, more = _bits(K_QUANT_TYPES[quant.name]), _bits(QType.Q6_K)
    block, _ = gguf.GGML_QUANT_SIZES[K_QUANT_TYPES[quant.name]]
    if len(tensor.shape) < 2:
        return 32
    if tensor.shape[-1] % block:
        return _bits(K_QUANT_FALLBACK)
    if is_output:
        return more
    if quant.name.endswith("_m") and any(part in tensor.name for part in (".attn_v.", ".ffn_down.")):
        return (base + more) / 2
    return base


def _bits(qtype: QType) -> float:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return 8 * size / block


# ---- ONNX ---------------------------------------------------------------------------------------------------------

def _onnx_needs(converter: Converter, quant: str, int4: Int4Options, vocabulary: int) -> DiskNeeds:
    """The three graphs hold the vision tower (the mmproj's tensors), the embedding, and the decoder: its layers and
    its output projection - the embedding again where tied, as the decoder graph has its own copy."""
    text = converter.text_plan(QUANTS["f32"]).tensors
    vision = sum(_values(tensor) for tensor in converter.vision_plan(QUANTS["f32"]).tensors)
    embedding = sum(_values(tensor) for tensor in text if tensor.name == EMBEDDING)
    output = sum(_values(tensor) for tensor in text if tensor.name == OUTPUT) or embedding
    layers = [tensor for tensor in text if tensor.name not in (EMBEDDING, OUTPUT)]
    matrices = sum(_values(tensor) for tensor in layers if len(tensor.shape) >= 2)
    vectors = sum(_values(tensor) for tensor in layers if len(tensor.shape) < 2)
    values = vision + embedding + output + matrices + vectors
    # onnx_export.write_external stages a bf16 checkpoint's weights as bf16, any other's as float32
    staged_bytes = 2 if converter.source_dtype() == "BF16" else 4
    scratch = values * staged_bytes
    if quant == "fp32":
        files = values * 4
        if staged_bytes == 4:
            scratch = 0  # onnx_files.write_graph moves the staged weights into place
    elif quant == "fp16":
        files = values * 2
    else:  # onnx_files.write_model_folder: vision and embedding fp16; the decoder int4, its output projection 8 bits
        files = round(2 * (vision + embedding) + _matmul_nbits_bytes(matrices, 4, int4)
                      + _matmul_nbits_bytes(output, 8, int4) + 4 * vectors)
    return DiskNeeds(files + vocabulary, scratch)


def _matmul_nbits_bytes(values: int, bits: int, options: Int4Options) -> float:
    """ONNX Runtime's MatMulNBits weights: `bits` per value, and per block a float32 scale and (asymmetric) a
    `bits`-wide zero point."""
    per_block = 4 + (0 if options.symmetric else bits / 8)
    return values * (bits / 8 + per_block / options.block_size)


def _values(tensor: PlannedTensor) -> int:
    return math.prod(tensor.shape)
