"""Qwen2-VL (2B, 7B Instruct) -> a `qwen2vl` language-model GGUF and a `qwen2vl_merger` mmproj GGUF.

Tensor names are taken as released (`model.layers.*`, `visual.*`, `lm_head.weight`); checkpoints saved by
transformers 5 (`model.language_model.*`, `model.visual.*`) are renamed to that layout first. llama.cpp's
vision graph wants the fused QKV split in three and the Conv3D patch embedding (temporal patch 2) as two
Conv2D kernels that it adds up.
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QType

from edgevl.converters.base import Converter, GGUFPlan
from edgevl.converters.gguf_files import (PlannedTensor, Quant, VisionTower, add_bpe_vocab, add_decoder_metadata,
                                          add_vision_metadata, load_part, storage_type)
from edgevl.errors import CheckpointError

VISION_LAYER_NORM_EPS = 1e-6  # nn.LayerNorm(eps=1e-6) in the released vision blocks and merger
LLAMA_CPP_IMAGE_SIZE = 560  # llama.cpp's clip loader needs a nominal size; Qwen2-VL images are dynamic


class Qwen2VLConverter(Converter):
    architectures = ("Qwen2VLForConditionalGeneration",)
    family = "qwen2vl"
    projector_type = gguf.VisionProjectorType.QWEN2VL  # llama.cpp's name for the vision encoder and merger

    @staticmethod
    def canonical_name(name: str) -> str:
        """transformers 5 checkpoint names -> released names."""
        if name.startswith("model.language_model."):
            return "model." + name.removeprefix("model.language_model.")
        if name.startswith("model.visual."):
            return name.removeprefix("model.")
        return name

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint)
        self.text = checkpoint.text_config()
        self.vision = checkpoint.config.get("vision_config") or {}
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key not in self.text:
                raise CheckpointError(f"{checkpoint.folder}/config.json: '{key}' is missing")
        if self.vision.get("temporal_patch_size", 2) != 2:
            raise CheckpointError("only temporal_patch_size 2 is supported (as in every released Qwen2-VL)")

    # ---- language model -------------------------------------------------------------------------------------

    def text_plan(self, quant: Quant) -> GGUFPlan:
        layers = self.text["num_hidden_layers"]
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2VL, layers)
        tied = self.text.get("tie_word_embeddings", False) or "lm_head.weight" not in self.tensors
        sources = [n for n in self.tensors if not n.startswith("visual.") and not (tied and n == "lm_head.weight")]
        self.require_decoder("model.", layers)
        tensors = [self._planned(name_map, name, quant.written) for name in sources]
        return GGUFPlan("qwen2vl", lambda writer: self._text_metadata(writer, quant), tensors)

    def _text_metadata(self, writer: gguf.GGUFWriter, quant: Quant) -> None:
        add_decoder_metadata(writer, self.text, quant, self.model_name, rope_theta=self._rope()["rope_theta"])
        writer.add_rope_dimension_sections(list(self._rope()["mrope_section"]) + [0])
        add_bpe_vocab(writer, self.checkpoint.folder, self.text["vocab_size"], pre_tokenizer="qwen2")

    def _rope(self) -> dict[str, Any]:
        """rope_theta and mrope_section, from the released `rope_scaling` or transformers 5 `rope_parameters`."""
        rope = {**(self.text.get("rope_scaling") or {}), **(self.text.get("rope_parameters") or {})}
        rope.setdefault("rope_theta", self.text.get("rope_theta", 1000000.0))
        if "mrope_section" not in rope:
            raise CheckpointError(f"{self.checkpoint.folder}/config.json: no mrope_section in rope_scaling")
        return rope

    # ---- vision projector ------------------------------------------------------------------------------------

    def vision_plan(self, quant: Quant) -> GGUFPlan:
        depth = self.vision["depth"]
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, depth)
        self.require_tensors(["visual.patch_embed.proj.weight", "visual.merger.ln_q.weight",
                                       "visual.merger.mlp.0.weight", "visual.merger.mlp.2.weight"])
        tensors: list[PlannedTensor] = []
        for name in (n for n in self.tensors if n.startswith("visual.")):
            if name == "visual.patch_embed.proj.weight":
                tensors += self._split_patch_embedding(name, quant)
            elif ".attn.qkv." in name:
                tensors += self._split_qkv(name_map, name, quant.written)
            else:
                tensors.append(self._planned(name_map, name, quant.written))
        return GGUFPlan("clip", lambda writer: self._vision_metadata(writer, quant), tensors)

    def _vision_metadata(self, writer: gguf.GGUFWriter, quant: Quant) -> None:
        add_vision_metadata(writer, self.vision_tower(), quant, self.model_name)
        writer.add_vision_spatial_merge_size(self.vision.get("spatial_merge_size", 2))

    def vision_tower(self) -> VisionTower:
        vision = self.vision
        preprocessor = self.checkpoint.read_json("preprocessor_config.json")
        width, feed_forward = self.vision_widths()
        return VisionTower(
            projector_type=self.projector_type, projection_dim=self.text["hidden_size"],
            image_size=LLAMA_CPP_IMAGE_SIZE, patch_size=vision.get("patch_size", 14), width=width,
            feed_forward=feed_forward, blocks=vision["depth"], heads=vision["num_heads"],
            layer_norm_eps=VISION_LAYER_NORM_EPS, mean=preprocessor["image_mean"], std=preprocessor["image_std"])

    def vision_widths(self) -> tuple[int, int]:
        """(width, MLP width) of the vision blocks."""
        return self.vision["embed_dim"], self.vision["embed_dim"] * self.vision.get("mlp_ratio", 4)

    def _split_patch_embedding(self, name: str, quant: Quant) -> list[PlannedTensor]:
        """[out, in, t=2, 14, 14] -> two Conv2D kernels. llama.cpp's conv needs them F16 or F32."""
        source = self.tensors[name]
        out_ch, in_ch, _, kh, kw = source.shape
        qtype = QType.F16 if quant.direct == QType.F16 else QType.F32
        base = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH] + ".weight"
        return [
            PlannedTensor(base + suffix, (out_ch, in_ch, kh, kw), qtype, load_part(source, np.s_[:, :, frame]))
            for frame, suffix in ((0, ""), (1, ".1"))
        ]

    def _split_qkv(self, name_map: gguf.TensorNameMap, name: str, wanted: QType) -> list[PlannedTensor]:
        source = self.tensors[name]
        width = source.shape[0] // 3
        planned = []
        for index, part in enumerate(("q", "k", "v")):
            gguf_name = self._gguf_name(name_map, name.replace(".qkv.", f".{part}."))
            shape = (width,) + source.shape[1:]
            planned.append(PlannedTensor(gguf_name, shape, storage_type(shape, wanted),
                                         load_part(source, np.s_[index * width:(index + 1) * width])))
        return planned

    # ---- ONNX -------------------------------------------------------------------------------------------------

    def write_onnx(self, folder, quant, int4, progress):
        from edgevl.converters.qwen2vl_onnx import write_model  # needs torch: only for ONNX export

        return write_model(self.checkpoint.folder, folder, quant, int4, progress, family=self.family)

    # ---- shared ------------------------------------------------------------------------------------------------

    def _planned(self, name_map: gguf.TensorNameMap, name: str, wanted: QType) -> PlannedTensor:
        source = self.tensors[name]
        return PlannedTensor.of(self._gguf_name(name_map, name), source, storage_type(source.shape, wanted))

    def _gguf_name(self, name_map: gguf.TensorNameMap, name: str) -> str:
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise CheckpointError(f"{self.checkpoint.folder}: unexpected tensor {name} "
                                  f"(not part of a {self.family} model)")
        return gguf_name
