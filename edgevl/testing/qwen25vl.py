"""A randomly initialised Qwen2.5-VL checkpoint in the released on-disk layout, built in seconds.

It has the real architecture (transformers' `Qwen2_5_VLForConditionalGeneration`) and Qwen2.5-VL-3B-Instruct's
config.json layout: a flat text config, and a vision config with windowed and full-attention blocks in the
released pattern (every n-th block attends fully; 4 blocks with period 2 here, 32 with period 8 released). The
tokenizer, chat template, preprocessor and file layout are Qwen2-VL's, which Qwen2.5-VL kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgevl.testing.qwen2vl import PREPROCESSOR_CONFIG, released_text_config, write_random_checkpoint


@dataclass(frozen=True)
class Qwen25VLSize:
    """Widths of a checkpoint. Tiny, but keeping what llama.cpp needs: K-quant rows multiples of 256, a vision
    MLP width unlike the vision width (mtmd takes a square down projection for an old swapped layout)."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    mrope_section: tuple[int, int, int] = (8, 12, 12)  # sums to head_dim / 2
    vision_hidden_size: int = 128
    vision_intermediate_size: int = 320
    vision_depth: int = 4
    vision_heads: int = 4
    fullatt_block_indexes: tuple[int, ...] = (1, 3)
    vocab_size: int = 151936
    tie_word_embeddings: bool = True

    def shortened(self, layers: int, vision_depth: int) -> Qwen25VLSize:
        """The same widths with fewer layers (benchmarks), keeping the full-attention period of the blocks."""
        period = self.fullatt_block_indexes[0] + 1
        return replace(self, num_hidden_layers=layers, vision_depth=vision_depth,
                       fullatt_block_indexes=tuple(range(period - 1, vision_depth, period)))


#: Qwen2.5-VL-3B-Instruct's real widths (for benchmarks); `shortened()` for fewer layers.
QWEN25VL_3B = Qwen25VLSize(
    hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
    mrope_section=(16, 24, 24), vision_hidden_size=1280, vision_intermediate_size=3420, vision_depth=32,
    vision_heads=16, fullatt_block_indexes=(7, 15, 23, 31),
)


def released_config(size: Qwen25VLSize, dtype: str) -> dict:
    """config.json in the released (flat, transformers 4.4x) format of Qwen/Qwen2.5-VL-3B-Instruct."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        **released_text_config(size, dtype),
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "vision_config": {
            "depth": size.vision_depth,
            "hidden_act": "silu",
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": size.vision_intermediate_size,
            "num_heads": size.vision_heads,
            "in_chans": 3,
            "out_hidden_size": size.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": list(size.fullatt_block_indexes),
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
    }


def build_qwen25vl_checkpoint(
    out: str | Path,
    size: Qwen25VLSize = Qwen25VLSize(),
    *,
    dtype: str = "float32",
    seed: int = 0,
    shards: int = 2,
    streamed: bool = False,
    sparse: bool = False,
) -> Path:
    """Write a random Qwen2.5-VL checkpoint folder and return its path. Deterministic for a given seed.
    `streamed`: one shard in memory at a time, `sparse`: no values (see `write_random_checkpoint`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from edgevl.converters.qwen25vl import Qwen25VLConverter

    preprocessor = {**PREPROCESSOR_CONFIG, "image_processor_type": "Qwen2_5_VLImageProcessor",
                    "processor_class": "Qwen2_5_VLProcessor"}
    return write_random_checkpoint(out, released_config(size, dtype), Qwen2_5_VLConfig,
                                   Qwen2_5_VLForConditionalGeneration, Qwen25VLConverter.canonical_name, preprocessor,
                                   dtype=dtype, seed=seed, shards=shards, tie_word_embeddings=size.tie_word_embeddings,
                                   streamed=streamed, sparse=sparse)
