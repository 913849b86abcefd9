"""What every family's ONNX export shares: tracing the embedding (image features placed at the image tokens) and
the language model's decoder with KV cache, and what the engine must know of that decoder.

Optimum cannot export these models, so edgevl traces small wrapper modules around transformers' own layers with
`torch.onnx.export` (the TorchScript exporter: about 4x faster to export than dynamo here, opset 17). The
wrappers avoid what tracing would freeze into constants: the decoder takes a ready-made causal mask built from
shapes and an explicit past key/value per layer. Qwen2-VL (converters/qwen2vl_onnx.py) and MiniCPM-V
(converters/minicpmv_onnx.py) add their vision graphs. Needs the `export` extra (torch, transformers).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

OPSET = 17
#: the traced examples' type, whatever torch's default dtype is set to: it fixes the graphs' activation type
FLOAT = torch.float32


class Embedder(nn.Module):
    """input_ids [1, seq] + image_features [n, hidden] (n may be 0) -> inputs_embeds, the k-th image token taking
    the k-th feature row."""

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
    """inputs_embeds [1, seq, hidden], position_ids [axes, 1, seq] (3 axes for M-RoPE, 1 for plain RoPE), past
    keys/values per layer -> logits [1, 1, vocab] of the last position (or [1, seq, vocab] with all_logits) and
    the present keys/values."""

    def __init__(self, language_model: nn.Module, lm_head: nn.Linear, mrope: bool, all_logits: bool = False) -> None:
        super().__init__()
        self.language_model = language_model
        self.lm_head = lm_head
        self.mrope = mrope
        # edgevl needs only the last position's logits; onnxruntime-genai insists on one row per input token
        self.all_logits = all_logits

    def forward(self, inputs_embeds, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        cache = _PastCache(past)
        hidden = inputs_embeds
        # the engine always sends [axes, batch, seq]; plain RoPE layers take [batch, seq]
        rope_positions = position_ids if self.mrope else position_ids[0]
        position_embeddings = self.language_model.rotary_emb(hidden, rope_positions)
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


def head_dim(text) -> int:
    return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads


def export_embedding(embed_tokens: nn.Embedding, image_token_id: int, path: Path) -> Path:
    width = embed_tokens.embedding_dim
    ids = torch.tensor([[1, image_token_id, image_token_id, 2]])
    with torch.no_grad():
        export(Embedder(embed_tokens, image_token_id), (ids, torch.randn(2, width, dtype=FLOAT)), path,
               ["input_ids", "image_features"], ["inputs_embeds"],
               {"input_ids": {1: "seq"}, "image_features": {0: "image_tokens"}, "inputs_embeds": {1: "seq"}})
    return path


def export_decoder(language_model: nn.Module, lm_head: nn.Linear, text, path: Path, *, mrope: bool,
                   all_logits: bool = False) -> Path:
    """The decoder graph for a transformers text config `text`: inputs_embeds, position_ids [axes, 1, seq] and
    past.{i}.key/value in; logits and present.{i}.key/value out."""
    layers = text.num_hidden_layers
    past_names = [f"past.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present_names = [name.replace("past.", "present.") for name in past_names]
    # a general case for tracing: 2 new tokens after 3 cached ones
    past = [torch.randn(1, text.num_key_value_heads, 3, head_dim(text), dtype=FLOAT) for _ in past_names]
    positions = torch.arange(3, 5).view(1, 1, 2).expand(3 if mrope else 1, 1, 2)
    example = (torch.randn(1, 2, text.hidden_size, dtype=FLOAT), positions, *past)
    axes = {"inputs_embeds": {1: "seq"}, "position_ids": {2: "seq"}, "logits": {1: "seq"}}
    axes.update({name: {2: "past"} for name in past_names})
    axes.update({name: {2: "total"} for name in present_names})
    with torch.no_grad():
        export(Decoder(language_model, lm_head, mrope, all_logits), example, path,
               ["inputs_embeds", "position_ids", *past_names], ["logits", *present_names], axes)
    return path


def export(module, args, path: Path, inputs, outputs, axes) -> None:
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False, do_constant_folding=True)


def decoder_config(text, eos_token_ids: list[int]) -> dict:
    """What the ONNX engine needs to know of the decoder (model.json), so that it never loads transformers."""
    return {
        "hidden_size": text.hidden_size,
        "num_layers": text.num_hidden_layers,
        "num_kv_heads": text.num_key_value_heads,
        "head_dim": head_dim(text),
        "vocab_size": text.vocab_size,
        "eos_token_ids": eos_token_ids,
    }
