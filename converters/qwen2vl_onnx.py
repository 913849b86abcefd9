"""Qwen2-VL -> three ONNX graphs (vision encoder, embedding with image merge, decoder with KV cache).

The embedding and decoder are traced as for every family (converters/onnx_export.py), the decoder with M-RoPE
position ids [3, 1, seq]; all three weightless, their weights streamed from the checkpoint afterwards, so that
a real-size model exports in a few GB. The vision wrapper avoids what tracing would freeze into constants: it
computes the patch positions from the grid input with tensor arithmetic (one image per call, full attention).
Needs the `export` extra (torch, transformers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgevl.converters.onnx_export import (
    FLOAT, Weights, decoder_config, export, export_decoder, export_embedding, weightless_traceable,
)


class VisionEncoder(nn.Module):
    """pixel_values [patches, 3*2*14*14] + image_grid_thw [1, 3] -> image embeddings [patches/4, hidden].

    One image per call, so attention is over all its patches (no cu_seqlens splitting, which tracing would
    freeze). The patch positions are computed from the grid with tensor arithmetic, which stays dynamic."""

    # visual: transformers' vision tower, typed Any: its parts are reached by name, which torch types as
    # Tensor | Module
    def __init__(self, visual: Any) -> None:
        super().__init__()
        self.visual = visual
        self.merge: int = visual.spatial_merge_size
        # Qwen2.5-VL: blocks outside fullatt_block_indexes attend within windows of window_size pixels
        self.full_attention = set(getattr(visual, "fullatt_block_indexes", range(len(visual.blocks))))
        window_size = getattr(visual, "window_size", 0)
        self.window_blocks = window_size // self.merge // visual.config.patch_size  # merged cells per window side

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        hidden = self.visual.patch_embed(pixel_values)
        cos, sin = self.visual.rotary_pos_emb(hidden, self.patch_positions(hidden, image_grid_thw))
        window_mask = self.window_mask(hidden, image_grid_thw) if self.window_blocks else None
        for number, block in enumerate(self.visual.blocks):
            attention = block.attn
            normed = block.norm1(hidden)
            n_patches = normed.shape[0]
            q, k, v = attention.qkv(normed).reshape(n_patches, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            scores = torch.einsum("qhd,khd->hqk", q, k) * attention.scaling
            if number not in self.full_attention:
                scores = scores + window_mask
            mixed = torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v).reshape(n_patches, -1)
            hidden = hidden + attention.proj(mixed)
            hidden = hidden + block.mlp(block.norm2(hidden))
        return self.visual.merger(hidden)

    def window_mask(self, hidden: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """[patches, patches] additive mask: a patch sees the patches of its own window. The reference regroups
        the patches window by window and back; attention within a masked set is the same, in the original order."""
        block = torch.arange(hidden.shape[0]) // (self.merge * self.merge)
        blocks_per_row = image_grid_thw[0, 2] // self.merge
        window_row = block // blocks_per_row // self.window_blocks
        window = window_row * blocks_per_row + block % blocks_per_row // self.window_blocks
        return torch.where(window[:, None] == window[None, :], 0.0, torch.finfo(hidden.dtype).min)

    def patch_positions(self, hidden: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """(row, column) of each patch; patches come block by block of merge x merge, blocks row by row."""
        merge = self.merge
        index = torch.arange(hidden.shape[0])
        block, within = index // (merge * merge), index % (merge * merge)
        blocks_per_row = image_grid_thw[0, 2] // merge
        rows = (block // blocks_per_row) * merge + within // merge
        cols = (block % blocks_per_row) * merge + within % merge
        return torch.stack([rows, cols], dim=-1)


def traceable_model(checkpoint: Path) -> tuple[Any, Callable[[nn.Module], Weights]]:
    """The checkpoint's model (Qwen2-VL or Qwen2.5-VL, as its config.json names it), weightless
    (onnx_export.weightless_model), and the `weights` argument of the exports, streaming from the checkpoint."""
    import transformers

    from edgevl.converters import open_converter

    converter = open_converter(checkpoint)
    config = transformers.AutoConfig.from_pretrained(checkpoint)
    model_class = getattr(transformers, converter.checkpoint.architecture)

    def load(name: str) -> np.ndarray:
        released = converter.canonical_name(name)
        if released == "lm_head.weight" and released not in converter.tensors:  # tied to the embedding
            released = "model.embed_tokens.weight"
        return converter.tensors[released].load()

    return weightless_traceable(
        lambda: model_class._from_config(config, attn_implementation="eager", dtype=FLOAT), load)


def export_graphs(model, folder: Path, weights: Callable[[nn.Module], Weights], on_graph=lambda: None,
                  all_logits: bool = False) -> dict[str, Path]:
    """Export the three fp32 graphs of a `traceable_model` into `folder`, one at a time, each with its weights
    streamed into its own data file; returns {"vision": path, "embed": path, "decoder": path}. `on_graph()` is
    called after each graph is written."""
    config = model.config
    paths = {name: folder / f"{name}.onnx" for name in ("vision", "embed", "decoder")}
    patch_dim = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size ** 2
    vision = VisionEncoder(model.model.visual)
    with torch.no_grad():
        export(vision, (torch.randn(24, patch_dim, dtype=FLOAT), torch.tensor([[1, 4, 6]])),
               paths["vision"], ["pixel_values", "image_grid_thw"], ["image_features"],
               {"pixel_values": {0: "patches"}, "image_features": {0: "tokens"}}, weights(vision))
    on_graph()
    export_embedding(model.model.language_model.embed_tokens, config.image_token_id, paths["embed"], weights)
    on_graph()
    export_decoder(model.model.language_model, model.lm_head, config.text_config, paths["decoder"], mrope=True,
                   all_logits=all_logits, weights=weights)
    on_graph()
    return paths


def write_model(checkpoint: Path, folder: Path, quant: str, int4, progress, all_logits: bool = False,
                family: str = "qwen2vl") -> dict[str, Path]:
    """Export, convert to the asked precision, validate; returns {role: file} of everything written.
    `all_logits` makes the decoder return logits for every input position (what onnxruntime-genai expects)."""
    from edgevl.converters import onnx_files

    progress.step("reading the checkpoint's configuration", None)
    model, weights = traceable_model(checkpoint)
    return onnx_files.write_model_folder(
        folder, quant, int4, progress,
        lambda scratch, on_graph: export_graphs(model, scratch, weights, on_graph, all_logits),
        checkpoint / "tokenizer.json", engine_config(model, checkpoint, family))


def engine_config(model, checkpoint: Path, family: str) -> dict:
    """What the ONNX engine needs to know, so that it never loads transformers."""
    import json

    config, text = model.config, model.config.text_config
    preprocessor = json.loads((checkpoint / "preprocessor_config.json").read_text(encoding="utf-8"))
    generation = checkpoint / "generation_config.json"
    eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else text.eos_token_id
    return {
        "family": family,
        **decoder_config(text, eos if isinstance(eos, list) else [eos]),
        "image_token_id": config.image_token_id,
        "patch_size": config.vision_config.patch_size,
        "temporal_patch_size": config.vision_config.temporal_patch_size,
        "merge_size": config.vision_config.spatial_merge_size,
        "image_mean": preprocessor["image_mean"],
        "image_std": preprocessor["image_std"],
    }
