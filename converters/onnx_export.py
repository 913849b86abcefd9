"""What every family's ONNX export shares: tracing the embedding (image features placed at the image tokens) and
the language model's decoder with KV cache, and what the engine must know of that decoder.

Optimum cannot export these models, so edgevl traces small wrapper modules around transformers' own layers with
`torch.onnx.export` (the TorchScript exporter: about 4x faster to export than dynamo here, opset 17). The
wrappers avoid what tracing would freeze into constants: the decoder takes a ready-made causal mask built from
shapes and an explicit past key/value per layer. Qwen2-VL (converters/qwen2vl_onnx.py) and MiniCPM-V
(converters/minicpmv_onnx.py) add their vision graphs. Needs the `export` extra (torch, transformers).

At real size the exporter's copies dominate: it holds about three times a graph's fp32 weights (a 2B model's
decoder is 6.2 GB). So a model can also be traced weightless (`weightless_model`: parameters whose memory is
never written, so the kernel never backs it) and its weights streamed from the checkpoint into the graph's data
file afterwards, one tensor at a time (`export(..., weights=...)`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevl.converters.onnx_files import data_file, set_external

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

    def __init__(self, language_model: nn.Module, lm_head: nn.Module, mrope: bool, all_logits: bool = False) -> None:
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


def row_blocks(array: np.ndarray, chunk_bytes: int = 1 << 26) -> Iterator[np.ndarray]:
    """`array` in blocks of rows of about `chunk_bytes` (views: a transposed view stays strided until copied)."""
    if array.ndim < 2:
        yield array
        return
    rows = max(1, chunk_bytes // max(1, array[0].nbytes))
    for start in range(0, array.shape[0], rows):
        yield array[start:start + rows]


def write_rows(array: np.ndarray, dtype, out) -> None:
    """Write `array` as `dtype` in C order, a block of rows at a time: a transposed view is made contiguous (and
    converted) block by block, never whole."""
    for block in row_blocks(array):
        np.ascontiguousarray(block, dtype=dtype).tofile(out)


def holds_bfloat16(array: np.ndarray) -> bool:
    """Whether every value of a float32 `array` is a bfloat16 value (its low 16 bits zero)."""
    return array.dtype == np.float32 and not any(
        (np.ascontiguousarray(block).view(np.uint32) & 0xFFFF).any() for block in row_blocks(array))


def export_embedding(embed_tokens: nn.Embedding, image_token_id: int, path: Path,
                     weights: Callable[[nn.Module], Weights] | None = None) -> Path:
    """The embedding graph; `weights(module)` streams a weightless module's weights (see `export`)."""
    width = embed_tokens.embedding_dim
    ids = torch.tensor([[1, image_token_id, image_token_id, 2]])
    module = Embedder(embed_tokens, image_token_id)
    with torch.no_grad():
        export(module, (ids, torch.randn(2, width, dtype=FLOAT)), path,
               ["input_ids", "image_features"], ["inputs_embeds"],
               {"input_ids": {1: "seq"}, "image_features": {0: "image_tokens"}, "inputs_embeds": {1: "seq"}},
               weights(module) if weights else None)
    return path


def export_decoder(language_model: nn.Module, lm_head: nn.Module, text, path: Path, *, mrope: bool,
                   all_logits: bool = False, weights: Callable[[nn.Module], Weights] | None = None) -> Path:
    """The decoder graph for a transformers text config `text`: inputs_embeds, position_ids [axes, 1, seq] and
    past.{i}.key/value in; logits and present.{i}.key/value out. `weights` as for `export_embedding`."""
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
    module = Decoder(language_model, lm_head, mrope, all_logits)
    with torch.no_grad():
        export(module, example, path, ["inputs_embeds", "position_ids", *past_names], ["logits", *present_names],
               axes, weights(module) if weights else None)
    return path


#: a weightless module's parameter (by its name in the exported module) -> its values, in the parameter's layout
Weights = Callable[[str], np.ndarray]


def export(module, args, path: Path, inputs, outputs, axes, weights: Weights | None = None) -> None:
    """Trace `module` into `path`. With `weights` the module is weightless (`weightless_model`): the graph is
    written without its parameters and `weights(name)` fills them in afterwards, into `path`.data."""
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False, export_params=weights is None,
                      # folding would compute with the weightless parameters' placeholder values
                      do_constant_folding=weights is None)
    if weights is not None:
        fill_weights(path, set(inputs), weights)


class TransposedLinear(nn.Module):
    """A Linear whose weight is stored [in, out]: traced, it is a MatMul straight on the weight, with no Transpose
    for the exporter to fold - the graph's weight is then one checkpoint tensor, transposed while streaming."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.new_empty(linear.in_features, linear.out_features),
                                     requires_grad=False)
        self.bias = linear.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(hidden, self.weight_t)
        return out if self.bias is None else out + self.bias


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory) but real buffers (rotary
    frequencies are computed in __init__ and needed for tracing)."""
    register = nn.Module.register_parameter

    def register_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None:
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=False)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def weightless_model(model: nn.Module) -> dict[int, tuple[str, bool]]:
    """Make a model built under `parameters_on_meta` traceable without its weights' memory: every Linear becomes a
    TransposedLinear, every parameter gets CPU memory that is never written (large blocks come fresh from the
    kernel, which backs a page only when it is written). Returns each parameter's source by id(): its name in
    `model`'s state dict and whether the weight is transposed."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, TransposedLinear(child))
    sources: dict[int, tuple[str, bool]] = {}
    for path, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                param = nn.Parameter(torch.empty(param.shape, dtype=FLOAT), requires_grad=False)
                with torch.no_grad():
                    if param.numel() < 1 << 18:
                        param.zero_()  # small blocks come from reused memory: no stray NaNs in the trace
                    # distinct values: the exporter merges parameters that compare equal
                    param.view(-1)[0] = len(sources) + 1
                setattr(module, name, param)
            weight = "weight" if name == "weight_t" else name
            sources[id(param)] = (f"{path}.{weight}" if path else weight, name == "weight_t")
    return sources


Traced = TypeVar("Traced", bound=nn.Module)


def weightless_traceable(build: Callable[[], Traced], load: Callable[[str], np.ndarray]
                         ) -> tuple[Traced, Callable[[nn.Module], Weights]]:
    """The model `build()` makes, weightless (`parameters_on_meta`, `weightless_model`), and the `weights`
    argument of the exports for it: each parameter streamed from `load(state dict name)`, which gives a tensor as
    the checkpoint stores it."""
    with parameters_on_meta():
        model = build()
    sources = weightless_model(model)
    return model.eval(), lambda module: named_weights(module, sources, load)


def named_weights(module: nn.Module, sources: dict[int, tuple[str, bool]],
                  load: Callable[[str], np.ndarray]) -> Weights:
    """`Weights` for a part of a weightless model: `load(state dict name)` gives a tensor as the checkpoint
    stores it ([out, in] for Linear weights)."""
    params = dict(module.named_parameters())

    def weights(name: str) -> np.ndarray:
        source, transposed = sources[id(params[name])]
        values = load(source)
        return values.T if transposed else values

    return weights


def fill_weights(path: Path, inputs: set[str], weights: Weights) -> None:
    """Turn a graph's parameter inputs (every input not in `inputs`) into initializers stored in `path`.data,
    written one tensor at a time."""
    import onnx

    model = onnx.load_model(str(path))
    parameters = [value for value in model.graph.input if value.name not in inputs]
    with data_file(path).open("wb") as out:
        for value in parameters:
            shape = tuple(dim.dim_value for dim in value.type.tensor_type.shape.dim)
            tensor = onnx.TensorProto(name=value.name, data_type=value.type.tensor_type.elem_type, dims=shape)
            write_external(tensor, weights(value.name), out)
            model.graph.initializer.append(tensor)
    kept = [value for value in model.graph.input if value.name in inputs]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    onnx.save_model(model, str(path))


def write_external(tensor, array: np.ndarray, out: BinaryIO) -> None:
    """Append `array` to the open data file `out` as `tensor`'s values (in its data type - bf16 where a float32
    weight holds only bf16 values - C order) and point `tensor` (an onnx.TensorProto) there."""
    import onnx

    shape = tuple(tensor.dims)
    if array.shape != shape:
        raise ValueError(f"{tensor.name}: the checkpoint gives shape {array.shape}, the graph wants {shape}")
    if tensor.data_type == onnx.TensorProto.FLOAT and holds_bfloat16(array):
        # a bf16 checkpoint's weight, widened when loaded: stored as bf16, exactly, in half the disk (a 7B
        # decoder is 28 GB in fp32); onnx_files widens it again where a graph needs fp32
        tensor.data_type = onnx.TensorProto.BFLOAT16
    begin = out.tell()
    write_rows(array, onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type), out)
    set_external(tensor, Path(out.name).name, begin, out.tell() - begin)


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
