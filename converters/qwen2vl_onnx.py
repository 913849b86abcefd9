"""Qwen2-VL -> three ONNX graphs (vision encoder, embedding with image merge, decoder with KV cache).

Optimum cannot export Qwen2-VL, so edgevl traces small wrapper modules around transformers' own layers with
`torch.onnx.export` (the TorchScript exporter: about 4x faster to export than dynamo here, opset 17). The
wrappers avoid what tracing would freeze into constants: the vision graph takes the patch position ids as an
input (one image per call, full attention), and the decoder takes a ready-made causal mask built from shapes
and an explicit past key/value per layer. Needs the `export` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17


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


class Embedder(nn.Module):
    """input_ids [1, seq] + image_features [n, hidden] (n may be 0) -> inputs_embeds, the k-th image-pad token
    taking the k-th feature row."""

    def __init__(self, embed_tokens: nn.Embedding, image_token_id: int) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.image_token_id = image_token_id

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        embeds = self.embed_tokens(input_ids)
        is_image = input_ids == self.image_token_id
        # a zero row keeps the gather valid when there are no image features (text-only prompts)
        features = torch.cat([image_features, image_features.new_zeros(1, image_features.shape[1])])
        feature_index = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(min=0)
        placed = features[feature_index.squeeze(0)].unsqueeze(0).to(embeds.dtype)
        return torch.where(is_image.unsqueeze(-1), placed, embeds)


class _PastCache:
    """The minimal cache interface the attention layers call: append new keys/values to the given past ones."""

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.past = past
        self.present = list(past)  # each layer replaces its entry in update()

    def update(self, keys, values, layer_idx, *args, **kwargs):
        past_keys, past_values = self.past[layer_idx]
        keys, values = torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)
        self.present[layer_idx] = (keys, values)
        return keys, values


class Decoder(nn.Module):
    """inputs_embeds [1, seq, hidden], position_ids [3, 1, seq] (M-RoPE), past keys/values per layer
    -> logits [1, 1, vocab] of the last position (or [1, seq, vocab] with all_logits) and the present
    keys/values."""

    def __init__(self, language_model: nn.Module, lm_head: nn.Linear, all_logits: bool = False) -> None:
        super().__init__()
        self.language_model = language_model
        self.lm_head = lm_head
        # edgevl needs only the last position's logits; onnxruntime-genai insists on one row per input token
        self.all_logits = all_logits

    def forward(self, inputs_embeds, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        cache = _PastCache(past)
        hidden = inputs_embeds
        position_embeddings = self.language_model.rotary_emb(hidden, position_ids)
        mask = causal_mask(hidden.shape[1], past[0][0].shape[2], hidden.dtype)
        for layer in self.language_model.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=position_embeddings,
                           past_key_values=cache, use_cache=True)
        logits = self.lm_head(self.language_model.norm(hidden if self.all_logits else hidden[:, -1:, :]))
        return (logits, *[tensor for pair in cache.present for tensor in pair])


def causal_mask(seq_len: torch.Tensor, past_len: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, seq, past+seq] additive mask: query i sees keys up to past+i."""
    # torch.arange takes the traced 0-d size tensors at run time (that keeps the graph dynamic); its stubs say numbers
    query = torch.arange(seq_len).unsqueeze(1) + past_len  # type: ignore[call-overload]
    key = torch.arange(past_len + seq_len).unsqueeze(0)  # type: ignore[call-overload]
    return torch.where(key <= query, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]


def load_reference_model(checkpoint: Path):
    """Qwen2-VL or Qwen2.5-VL, as the checkpoint's config.json names it."""
    import json

    import transformers

    architecture = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    model_class = getattr(transformers, architecture)
    return model_class.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager").eval()


def export_graphs(model, folder: Path, on_graph=lambda name: None, all_logits: bool = False) -> dict[str, Path]:
    """Export the three fp32 graphs into `folder`; returns {"vision": path, "embed": path, "decoder": path}.
    `on_graph(name)` is called after each graph is written."""
    config = model.config
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    paths = {name: folder / f"{name}.onnx" for name in ("vision", "embed", "decoder")}
    patch_dim = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size ** 2

    with torch.no_grad():
        grid = torch.tensor([[1, 4, 6]])
        _export(VisionEncoder(model.model.visual), (torch.randn(24, patch_dim), grid), paths["vision"],
                ["pixel_values", "image_grid_thw"], ["image_features"],
                {"pixel_values": {0: "patches"}, "image_features": {0: "tokens"}})

        on_graph("vision")
        ids = torch.tensor([[1, config.image_token_id, config.image_token_id, 2]])
        _export(Embedder(model.model.language_model.embed_tokens, config.image_token_id),
                (ids, torch.randn(2, text.hidden_size)), paths["embed"], ["input_ids", "image_features"],
                ["inputs_embeds"], {"input_ids": {1: "seq"}, "image_features": {0: "image_tokens"},
                                    "inputs_embeds": {1: "seq"}})

        on_graph("embed")
        layers = text.num_hidden_layers
        past_names = [f"past.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        present_names = [name.replace("past.", "present.") for name in past_names]
        # a general case for tracing: 2 new tokens after 3 cached ones
        past = [torch.randn(1, text.num_key_value_heads, 3, head_dim) for _ in past_names]
        example = (torch.randn(1, 2, text.hidden_size), torch.arange(3, 5).view(1, 1, 2).expand(3, 1, 2), *past)
        axes = {"inputs_embeds": {1: "seq"}, "position_ids": {2: "seq"}}
        axes.update({name: {2: "past"} for name in past_names})
        axes.update({name: {2: "total"} for name in present_names})
        axes["logits"] = {1: "seq"}
        _export(Decoder(model.model.language_model, model.lm_head, all_logits), example, paths["decoder"],
                ["inputs_embeds", "position_ids", *past_names], ["logits", *present_names], axes)
        on_graph("decoder")
    return paths


def _export(module, args, path: Path, inputs, outputs, axes) -> None:
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False, do_constant_folding=True)


def write_model(checkpoint: Path, folder: Path, quant: str, int4, progress, all_logits: bool = False,
                family: str = "qwen2vl") -> dict[str, Path]:
    """Export, convert to the asked precision, validate; returns {role: file} of everything written.
    `all_logits` makes the decoder return logits for every input position (what onnxruntime-genai expects)."""
    import json
    import shutil
    import tempfile

    from edgevl.converters import onnx_files

    progress.step("loading the checkpoint with transformers", None)
    model = load_reference_model(checkpoint)
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fp32-") as scratch:
        progress.step("exporting vision, embedding and decoder graphs", 3)
        exported = export_graphs(model, Path(scratch), on_graph=lambda name: progress.advance(), all_logits=all_logits)
        progress.step(f"writing {quant} graphs", 3)
        for role, path in exported.items():
            graph = onnx_files.load(path)
            if quant == "fp16" or (quant == "int4" and role != "decoder"):
                graph = onnx_files.to_fp16(graph)
            elif quant == "int4":
                graph = onnx_files.to_int4(graph, int4, output_projection="/lm_head/MatMul")
            written = onnx_files.save(graph, folder / path.name)
            onnx_files.check(written[0])
            files[role] = written[0]
            if len(written) > 1:
                files[f"{role}_data"] = written[1]
            del graph
            progress.advance()
    files["tokenizer"] = Path(shutil.copy(checkpoint / "tokenizer.json", folder / "tokenizer.json"))
    files["config"] = folder / "model.json"
    files["config"].write_text(json.dumps(engine_config(model, checkpoint, family), indent=2), encoding="utf-8")
    return files


def engine_config(model, checkpoint: Path, family: str) -> dict:
    """What the ONNX engine needs to know, so that it never loads transformers."""
    import json

    config, text = model.config, model.config.text_config
    preprocessor = json.loads((checkpoint / "preprocessor_config.json").read_text(encoding="utf-8"))
    generation = checkpoint / "generation_config.json"
    eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else text.eos_token_id
    return {
        "family": family,
        "hidden_size": text.hidden_size,
        "num_layers": text.num_hidden_layers,
        "num_kv_heads": text.num_key_value_heads,
        "head_dim": text.hidden_size // text.num_attention_heads,
        "vocab_size": text.vocab_size,
        "image_token_id": config.image_token_id,
        "eos_token_ids": eos if isinstance(eos, list) else [eos],
        "patch_size": config.vision_config.patch_size,
        "temporal_patch_size": config.vision_config.temporal_patch_size,
        "merge_size": config.vision_config.spatial_merge_size,
        "image_mean": preprocessor["image_mean"],
        "image_std": preprocessor["image_std"],
    }
