"""MiniCPM-V 2.6 / 2.5 (and MiniCPM-o 2.6's vision and language parts) -> three ONNX graphs.

- vision: SigLIP + resampler for one slice of any size the released slicing makes. It is the graph the GGUF
  engine builds from the mmproj (edgevl/engines/minicpmv_vision.py), here built from the shapes of the
  checkpoint's tensors under the same names, its weights then written one at a time: patches [N, 3*14*14],
  SigLIP position ids [N] and the resampler's key positions [N, width] in (the engine computes both, so the patch
  grid stays free), [query_num, width] out.
- embedding and decoder: the language model (`llm.*`: Qwen2 for 2.6 and o-2.6, Llama-3 for 2.5) rebuilt with
  transformers (no remote code) and traced weightless as for every family (converters/onnx_export.py), plain
  RoPE, the checkpoint's tensors then streamed into each graph's data file: a 7B model is never in memory whole.
  Each slice's features replace the `<unk>` tokens of its placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgevl.chat import END_OF_TURN
from edgevl.converters import onnx_files
from edgevl.converters.gguf_files import QUANTS
from edgevl.converters.onnx_export import (decoder_config, export_decoder, export_embedding, weightless_traceable,
                                          write_external)
from edgevl.errors import CheckpointError
from edgevl.families.minicpmv import MINICPMV_UNK

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

#: config.json keys that describe MiniCPM-V itself, not its language model
MINICPMV_CONFIG_KEYS = {"architectures", "model_type", "auto_map", "version", "query_num", "slice_mode",
                        "slice_config", "use_image_id", "drop_vision_last_layer", "batch_vision_input",
                        "vision_config", "image_size", "patch_size", "audio_config", "tts_config"}


def write_model(converter, folder: Path, quant: str, int4, progress) -> dict[str, Path]:
    """Export, convert to the asked precision, validate; returns {role: file} of everything written.
    `converter` is the checkpoint's MiniCPMVConverter."""
    from tokenizers import Tokenizer

    tokenizer_file = converter.checkpoint.folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{converter.checkpoint.folder}: tokenizer.json is missing; copy the whole folder")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    image_token_id = tokenizer.token_to_id(MINICPMV_UNK)
    if image_token_id is None:
        raise CheckpointError(f"{tokenizer_file}: no {MINICPMV_UNK} token (MiniCPM-V's image placeholder)")
    text = language_model_config(converter)
    converter.require_decoder("llm.model.", text.num_hidden_layers)

    def export(scratch: Path, on_graph) -> dict[str, Path]:
        paths = {"vision": export_vision(converter, scratch / "vision.onnx")}
        on_graph()
        llm, weights = traceable_language_model(converter, text)
        paths["embed"] = export_embedding(llm.model.embed_tokens, image_token_id, scratch / "embed.onnx", weights)
        on_graph()
        paths["decoder"] = export_decoder(llm.model, llm.lm_head, text, scratch / "decoder.onnx", mrope=False,
                                          weights=weights)
        on_graph()
        return paths

    config = {"family": "minicpmv", **decoder_config(text, eos_token_ids(converter, tokenizer)),
              "image_token_id": image_token_id, "vision": asdict(converter.vision_settings())}
    return onnx_files.write_model_folder(folder, quant, int4, progress, export, tokenizer_file, config)


def export_vision(converter, path: Path) -> Path:
    """The vision graph of edgevl/engines/minicpmv_vision.py, built from the tensors' shapes alone; its weights,
    the checkpoint's, are written into `path`.data one at a time (onnx_export.write_external), never all in
    memory (a real-size tower is 1.9 GB in float32)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    from edgevl.engines.minicpmv_vision import standalone_graph

    tensors = {t.name: t for t in converter.vision_plan(QUANTS["f32"]).tensors}
    model = standalone_graph({name: t.shape for name, t in tensors.items()}, converter.vision_settings())
    with onnx_files.data_file(path).open("wb") as out:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):  # a weight (the graph's own constants are inline)
                write_external(tensor, tensors[tensor.name].compute(), out)
    onnx.save_model(model, str(path))
    return path


def language_model_config(converter):
    """`llm`'s settings as transformers' Qwen2Config (2.6, o-2.6) or LlamaConfig (2.5), eager attention."""
    from transformers import LlamaConfig, Qwen2Config

    config_class = {"2.6": Qwen2Config, "2.5": LlamaConfig}[converter.version]
    fields = {key: value for key, value in converter.text.items()
              if key not in MINICPMV_CONFIG_KEYS and not key.startswith("_")}
    config = config_class(**fields)
    config._attn_implementation = "eager"
    return config


def traceable_language_model(converter, config) -> tuple[Qwen2ForCausalLM | LlamaForCausalLM, Callable]:
    """`llm.*` as transformers' Qwen2ForCausalLM or LlamaForCausalLM, weightless, and the exports' `weights`
    argument streaming the checkpoint's tensors (onnx_export.weightless_traceable)."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    model_class = {"2.6": Qwen2ForCausalLM, "2.5": LlamaForCausalLM}[converter.version]

    def load(name: str) -> np.ndarray:
        released = f"llm.{name}"
        if name == "lm_head.weight" and released not in converter.tensors:  # tied output projection
            released = "llm.model.embed_tokens.weight"
        return converter.tensors[released].load()

    return weightless_traceable(lambda: model_class(config), load)


def eos_token_ids(converter, tokenizer) -> list[int]:
    """Where generation stops: the checkpoint's end-of-sequence id(s) and its chat template's end of turn (the
    release stops at both: `<|im_end|>` / `<|endoftext|>` for 2.6, `<|eot_id|>` / `<|end_of_text|>` for 2.5)."""
    configured = converter.text.get("eos_token_id")
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    end_of_turn = tokenizer.token_to_id(END_OF_TURN[converter.prompt_settings()["chat_template"]])
    return sorted(set(ids) | ({end_of_turn} if end_of_turn is not None else set()))
