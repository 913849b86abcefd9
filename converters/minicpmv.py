"""MiniCPM-V 2.6 and MiniCPM-Llama3-V 2.5 (and MiniCPM-o 2.6's vision + language part) -> a plain language-model
GGUF (`qwen2` for 2.6, `llama` for 2.5) and a `resampler` mmproj GGUF (SigLIP + perceiver resampler).

Read straight from the released layout (`llm.*`, `vpm.*`, `resampler.*`) with no remote code. What llama.cpp
needs that the checkpoint does not hold as such:
- the resampler's packed `in_proj` split into q / k / v, and its `proj` transposed (the release multiplies
  `x @ proj`, ggml multiplies by the transpose of what it stores);
- `resampler.pos_embed_k`, the 70x70 sin-cos table of the keys (the release computes it on the fly);
- for 2.5, the query/key rows of each attention head interleaved as llama.cpp's `llama` rope expects (the same
  permutation llama.cpp's own converter applies to Llama checkpoints).
MiniCPM-o 2.6's audio encoder and TTS parts are skipped (edgevl reads images, not speech).
"""

from __future__ import annotations

import logging

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QType

from edgevl.converters.base import Converter, GGUFPlan
from edgevl.converters.gguf_files import (PlannedTensor, Quant, VisionTower, add_bpe_vocab, add_decoder_metadata,
                                          add_vision_metadata, load_part, storage_type)
from edgevl.errors import CheckpointError
from edgevl.families.minicpmv import QUERY_NUM, SLICE_SIZE, VisionSettings, chat_defaults, resampler_key_positions
from edgevl.model_cards import card_for_config

log = logging.getLogger(__name__)
SUPPORTED = "edgevl converts 2.5 (MiniCPM-Llama3-V 2.5) and 2.6 (MiniCPM-V 2.6, MiniCPM-o 2.6)"

#: clip.minicpmv_version as llama.cpp numbers the releases (it picks the prompt layout and query count by it)
LLAMA_CPP_VERSION = {"2.5": 2, "2.6": 3, "o2.6": 4}
#: MiniCPM-V 2.0's LLM width and resampler queries, how a config without `version` is told from 2.5's (as vLLM does)
V2_0_SHAPE = {"hidden_size": 2304, "query_num": 64}
#: the SigLIP position table covers 70x70 patches (980 px at patch 14), whatever the slice size
POSITION_GRID = 70
#: llama.cpp's name for MiniCPM-V's projector (gguf's VisionProjectorType has no constant for it)
PROJECTOR_TYPE = "resampler"
LAYER_NORM_EPS = 1e-6  # SigLIP's and the resampler's LayerNorms
#: parts of MiniCPM-o that are not about images
SKIPPED_PREFIXES = ("apm.", "tts.", "audio_projection_layer.", "audio_avg_pooler.")


class MiniCPMVConverter(Converter):
    architectures = ("MiniCPMV", "MiniCPMO")
    family = "minicpmv"

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint)
        self.text = checkpoint.text_config()
        self.vision = checkpoint.config.get("vision_config") or {}
        self.version = self._version()
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"):
            if key not in self.text:
                raise CheckpointError(f"{checkpoint.folder}/config.json: '{key}' is missing")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if key not in self.vision:
                raise CheckpointError(f"{checkpoint.folder}/config.json: vision_config.{key} is missing")
        if self.text["hidden_size"] % 128:
            raise CheckpointError(f"{checkpoint.folder}: the LLM width {self.text['hidden_size']} is not a multiple "
                                  "of 128 (the resampler has one attention head per 128 channels)")
        skipped = sorted({name.split(".")[0] for name in self.tensors if name.startswith(SKIPPED_PREFIXES)})
        if skipped:
            log.warning("MiniCPM-o: converting the vision and language parts; skipping %s (audio / speech)",
                        ", ".join(skipped))
        self.tensors = {n: t for n, t in self.tensors.items() if not n.startswith(SKIPPED_PREFIXES)}
        unknown = sorted({n.split(".")[0] for n in self.tensors} - {"llm", "vpm", "resampler"})
        if unknown:
            raise CheckpointError(f"{checkpoint.folder}: unexpected tensors under {', '.join(unknown)} "
                                  "(not part of MiniCPM-V)")

    def _version(self) -> str:
        """"2.5" or "2.6" (MiniCPM-o 2.6 shares 2.6's vision path); earlier releases are refused."""
        if self.checkpoint.architecture == "MiniCPMO":
            return "2.6"
        if "version" not in self.checkpoint.config:
            return self._infer_version()
        version = str(self.checkpoint.config["version"])
        if version not in QUERY_NUM:
            raise CheckpointError(f"{self.checkpoint.folder}: MiniCPM-V version {version}; {SUPPORTED}")
        return version

    def _infer_version(self) -> str:
        """The released MiniCPM-Llama3-V 2.5 config.json predates the `version` field; read such a config as vLLM
        does: 2.0 when the LLM is 2304 wide with 64 resampler queries, 2.5 otherwise - and say so. The 2.5 card is
        then matched with the inferred version."""
        shape = {"hidden_size": self.text.get("hidden_size"), "query_num": self.checkpoint.config.get("query_num")}
        described = f"LLM width {shape['hidden_size']}, {shape['query_num'] or 'no'} resampler queries"
        if shape == V2_0_SHAPE:
            raise CheckpointError(f"{self.checkpoint.folder}: config.json has no 'version' and the model looks like "
                                  f"MiniCPM-V 2.0 ({described}), which edgevl does not convert; {SUPPORTED}")
        log.warning("MiniCPM-V: config.json has no 'version'; converting it as 2.5 (MiniCPM-Llama3-V 2.5) because "
                    "its shape (%s) is not 2.0's (LLM width 2304, 64 queries)", described)
        self.card = card_for_config(self.family, {**self.text, "version": 2.5})
        return "2.5"

    @property
    def llama_cpp_version(self) -> int:
        return LLAMA_CPP_VERSION["o2.6" if self.checkpoint.architecture == "MiniCPMO" else self.version]

    def prompt_settings(self) -> dict[str, str]:
        if self.card:
            return super().prompt_settings()
        # a checkpoint of no released size (a fine-tune, a test fixture) still prompts like its release
        return chat_defaults(self.version)

    # ---- language model -------------------------------------------------------------------------------------

    def text_plan(self, quant: Quant) -> GGUFPlan:
        layers = self.text["num_hidden_layers"]
        arch = gguf.MODEL_ARCH.LLAMA if self.version == "2.5" else gguf.MODEL_ARCH.QWEN2
        name_map = gguf.get_tensor_name_map(arch, layers)
        tied = self.text.get("tie_word_embeddings", False) or "llm.lm_head.weight" not in self.tensors
        sources = [n for n in self.tensors if n.startswith("llm.") and not (tied and n == "llm.lm_head.weight")]
        self.require_decoder("llm.model.", layers)
        tensors = [self._text_tensor(name_map, name, quant.written) for name in sources]
        return GGUFPlan(gguf.MODEL_ARCH_NAMES[arch], lambda writer: self._text_metadata(writer, quant), tensors)

    def _text_tensor(self, name_map: gguf.TensorNameMap, name: str, wanted: QType) -> PlannedTensor:
        source = self.tensors[name]
        gguf_name = self._gguf_name(name_map, name.removeprefix("llm."))
        if self.version == "2.5" and name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            heads = self.text["num_attention_heads"] if ".q_proj." in name else self._kv_heads()
            return PlannedTensor(gguf_name, source.shape, storage_type(source.shape, wanted),
                                 lambda: interleave_rope_halves(source.load(), heads))
        return PlannedTensor.of(gguf_name, source, storage_type(source.shape, wanted))

    def _kv_heads(self) -> int:
        return self.text.get("num_key_value_heads", self.text["num_attention_heads"])

    def _text_metadata(self, writer: gguf.GGUFWriter, quant: Quant) -> None:
        text = self.text
        theta = text.get("rope_theta", 500000.0 if self.version == "2.5" else 1000000.0)
        add_decoder_metadata(writer, text, quant, self.model_name, rope_theta=theta)
        if self.version == "2.5":
            writer.add_rope_dimension_count(text["hidden_size"] // text["num_attention_heads"])
            writer.add_vocab_size(text["vocab_size"])
        add_bpe_vocab(writer, self.checkpoint.folder, text["vocab_size"],
                      pre_tokenizer="llama-bpe" if self.version == "2.5" else "qwen2")

    # ---- vision projector ------------------------------------------------------------------------------------

    def _vision_layers(self) -> int:
        """The SigLIP layers the model uses: the release can drop the last one (`drop_vision_last_layer`)."""
        layers = self.vision["num_hidden_layers"]
        return layers - 1 if self.checkpoint.config.get("drop_vision_last_layer") else layers

    def vision_plan(self, quant: Quant) -> GGUFPlan:
        layers = self._vision_layers()
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, layers)
        self.require_tensors(["vpm.embeddings.patch_embedding.weight", "vpm.embeddings.position_embedding.weight",
                              "vpm.post_layernorm.weight", "resampler.query", "resampler.kv_proj.weight",
                              "resampler.attn.in_proj_weight", "resampler.attn.in_proj_bias", "resampler.proj"])
        dropped = f"vpm.encoder.layers.{layers}."
        tensors: list[PlannedTensor] = []
        for name in self.tensors:
            if not name.startswith(("vpm.", "resampler.")) or name.startswith(dropped):
                continue
            if name.startswith("resampler.attn.in_proj_"):
                tensors += self._split_in_proj(name, quant.written)
            elif name == "resampler.proj":
                proj = self.tensors[name]
                tensors.append(PlannedTensor("resampler.proj.weight", proj.shape[::-1],
                                             storage_type(proj.shape, quant.written), proj.load_transposed))
            else:
                tensors.append(self._vision_tensor(name_map, name, quant))
        width = self.text["hidden_size"]
        table = (POSITION_GRID * POSITION_GRID, width)
        tensors.append(PlannedTensor("resampler.pos_embed_k", table, storage_type(table, quant.written),
                                     lambda: resampler_key_positions(width, POSITION_GRID, POSITION_GRID)))
        return GGUFPlan("clip", lambda writer: self._vision_metadata(writer, quant), tensors)

    def _vision_tensor(self, name_map: gguf.TensorNameMap, name: str, quant: Quant) -> PlannedTensor:
        source = self.tensors[name]
        wanted = quant.written
        if name == "vpm.embeddings.patch_embedding.weight":  # llama.cpp's convolution needs F16 or F32
            wanted = QType.F16 if quant.direct == QType.F16 else QType.F32
        elif name == "resampler.query":  # llama.cpp layer-norms it as it is: ggml_norm runs on F32 only
            wanted = QType.F32
        return PlannedTensor.of(self._gguf_name(name_map, name), source, storage_type(source.shape, wanted))

    def _split_in_proj(self, name: str, wanted: QType) -> list[PlannedTensor]:
        """nn.MultiheadAttention's packed [q; k; v] projection -> resampler.attn.{q,k,v}.{weight,bias}."""
        source = self.tensors[name]
        width = source.shape[0] // 3
        kind = "weight" if name.endswith("weight") else "bias"
        shape = (width,) + source.shape[1:]
        return [
            PlannedTensor(f"resampler.attn.{part}.{kind}", shape, storage_type(shape, wanted),
                          load_part(source, np.s_[index * width:(index + 1) * width]))
            for index, part in enumerate(("q", "k", "v"))
        ]

    def vision_settings(self) -> VisionSettings:
        """The vision tower in the terms of edgevl's vision graph (also what the mmproj's metadata says)."""
        vision = self.vision
        preprocessor = self.checkpoint.read_json("preprocessor_config.json")
        return VisionSettings(
            release=self.version, query_num=self.checkpoint.config.get("query_num", QUERY_NUM[self.version]),
            width=self.text["hidden_size"], layers=self._vision_layers(), heads=vision["num_attention_heads"],
            eps=vision.get("layer_norm_eps", LAYER_NORM_EPS), patch=vision.get("patch_size", 14),
            slice_size=preprocessor.get("scale_resolution", SLICE_SIZE),
            mean=preprocessor.get("norm_mean", [0.5] * 3), std=preprocessor.get("norm_std", [0.5] * 3))

    def _vision_metadata(self, writer: gguf.GGUFWriter, quant: Quant) -> None:
        settings = self.vision_settings()
        tower = VisionTower(
            projector_type=PROJECTOR_TYPE, projection_dim=settings.width, image_size=settings.slice_size,
            patch_size=settings.patch, width=self.vision["hidden_size"], feed_forward=self.vision["intermediate_size"],
            blocks=settings.layers, heads=settings.heads, layer_norm_eps=settings.eps, mean=settings.mean,
            std=settings.std)
        add_vision_metadata(writer, tower, quant, self.model_name)
        writer.add_vision_use_gelu(True)  # SigLIP's tanh GELU (without it llama.cpp would use quick GELU)
        writer.add_int32("clip.minicpmv_version", self.llama_cpp_version)
        writer.add_uint32("clip.minicpmv_query_num", settings.query_num)

    # ---- ONNX -------------------------------------------------------------------------------------------------

    def write_onnx(self, folder, quant, int4, progress):
        from edgevl.converters.minicpmv_onnx import write_model  # needs torch: only for ONNX export

        return write_model(self, folder, quant, int4, progress)

    # ---- shared ------------------------------------------------------------------------------------------------

    def _gguf_name(self, name_map: gguf.TensorNameMap, name: str) -> str:
        if name.startswith("vpm.post_layernorm."):  # not in gguf's name map under MiniCPM-V's prefix
            return "v.post_ln." + name.rsplit(".", 1)[1]
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise CheckpointError(f"{self.checkpoint.folder}: unexpected tensor {name} (not part of MiniCPM-V)")
        return gguf_name


def interleave_rope_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """Q/K rows of each head from Hugging Face's rotate-half order (first half, second half) to the interleaved
    pairs of llama.cpp's `llama` rope: row i of the first half and row i of the second half become neighbours."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))
