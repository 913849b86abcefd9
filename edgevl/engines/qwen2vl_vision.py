"""Qwen2-VL's vision tower (ViT + 2x2 patch merger) run by ONNX Runtime from the weights of the mmproj GGUF.

Why not libmtmd's own encoder: on a CPU it is the whole cost of an OCR request (a 1120x700 screenshot is 4,000
patches through 32 layers of full attention), and llama.cpp's clip runs it with f16 weights - every matrix product
converts its activations to f16 first, and its CPU flash attention works in f16 too. ONNX Runtime runs the same
weights widened to float32 through its blocked float32 GEMMs, which is faster on CPUs without native f16 arithmetic
and closer to the reference (transformers in float32). libmtmd still tokenizes the prompt and places the image on
M-RoPE's grid; only the embeddings of its image chunks come from here (benchmarks/bench_llamacpp.py measures both).

The graph is built in memory at load time, as edgevl.engines.minicpmv_vision does for MiniCPM-V, and follows
transformers' Qwen2VisionTransformerPretrainedModel: the Conv3D patch embedding as one matrix product over
qwen2vl_patches' flattened patches (both temporal halves; the GGUF stores them as two Conv2D kernels), 2-D rotary
positions on each head, LayerNorm blocks with QuickGELU MLPs, and the merger (LayerNorm, 2x2 patches concatenated,
Linear, exact GELU, Linear).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgevl.engines.onnx_graph import GraphBuilder, as_float32, create_session
from edgevl.errors import BackendUnavailable, ModelError
from edgevl.families.qwen2vl import qwen2vl_patches
from edgevl.model_files import check_gguf

PROJECTOR_TYPE = "qwen2vl_merger"
ROPE_THETA = 10000.0  # the vision tower's rotary base (transformers' VisionRotaryEmbedding)
TEMPORAL_PATCH = 2


class Qwen2VLVision:
    """Encodes one resized image (sides multiples of 28) into [image tokens, text width] embeddings."""

    def __init__(self, mmproj: Path, threads: int) -> None:
        try:
            import gguf
            import onnxruntime
        except ImportError as error:
            raise BackendUnavailable(f"the ONNX Runtime vision encoder needs gguf, onnx and onnxruntime ({error}): "
                                     "pip install 'edgevl[gguf]'") from None
        check_gguf(mmproj)
        try:
            reader = gguf.GGUFReader(mmproj)
            fields = {name: field.contents() for name, field in reader.fields.items() if name.startswith("clip.")}
            if fields.get("clip.projector_type") != PROJECTOR_TYPE:
                raise ModelError(f"{mmproj}: not a Qwen2-VL projector ({fields.get('clip.projector_type')})")
            self.patch = int(fields["clip.vision.patch_size"])
            self.merge = int(fields.get("clip.vision.spatial_merge_size", 2))
            self.mean, self.std = fields["clip.vision.image_mean"], fields["clip.vision.image_std"]
            self.heads = int(fields["clip.vision.attention.head_count"])
            self.width = int(fields["clip.vision.embedding_length"])
            graph, weights = _build_graph({t.name: as_float32(t) for t in reader.tensors}, fields)
        except ModelError:
            raise
        except Exception as error:  # GGUFReader raises ValueError, IndexError, KeyError... for bad files
            raise ModelError(f"{mmproj}: not a readable Qwen2-VL projector ({type(error).__name__}: {error})") from None
        del reader
        try:
            self.session = create_session(onnxruntime, graph, weights, ["CPUExecutionProvider"], threads)
        except Exception as error:
            raise ModelError(f"{mmproj}: ONNX Runtime could not build the Qwen2-VL vision graph ({error})") from None

    def encode(self, image: Image.Image) -> np.ndarray:
        """An image whose sides are multiples of patch x merge -> [tokens, text width] float32 embeddings, in the
        order libmtmd places image tokens (row by row of merged cells)."""
        patches, (_, rows, columns) = qwen2vl_patches(image, self.mean, self.std, self.patch, TEMPORAL_PATCH,
                                                      self.merge)
        cos, sin = self.rotary(rows, columns)
        return self.session.run(None, {"patches": patches, "rope_cos": cos, "rope_sin": sin})[0]

    def rotary(self, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin [patches, head width] of the 2-D rotary positions, patches in merge-block order: the first
        half of each head turns with the patch's row, the second with its column (transformers' rot_pos_emb)."""
        merge = self.merge
        row_ids = np.arange(rows)[:, None].repeat(columns, axis=1)
        column_ids = np.arange(columns)[None, :].repeat(rows, axis=0)
        blocked = [ids.reshape(rows // merge, merge, columns // merge, merge).transpose(0, 2, 1, 3).ravel()
                   for ids in (row_ids, column_ids)]
        quarter = self.width // self.heads // 4
        inverse_frequency = 1.0 / ROPE_THETA ** (np.arange(0, 2 * quarter, 2, dtype=np.float32) / (2 * quarter))
        angles = np.concatenate([np.outer(ids.astype(np.float32), inverse_frequency) for ids in blocked], axis=1)
        angles = np.concatenate([angles, angles], axis=1)
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def close(self) -> None:
        self.session = None


def _build_graph(weights: dict[str, np.ndarray], fields: dict):
    g = GraphBuilder(weights)
    eps = float(fields["clip.vision.attention.layer_norm_epsilon"])
    heads, width = int(fields["clip.vision.attention.head_count"]), int(fields["clip.vision.embedding_length"])
    head_width = width // heads
    # Conv3D over (channel, time, row, column) with stride = kernel is one matrix product over flattened patches
    kernels = [weights.pop("v.patch_embd.weight"), weights.pop("v.patch_embd.weight.1")]
    weights["v.patch_embd.matrix"] = np.stack(kernels, axis=2).reshape(width, -1)
    x = g.op("MatMul", "patches", g.op("Transpose", "v.patch_embd.matrix", perm=[1, 0]))
    cos = g.op("Unsqueeze", "rope_cos", g.const([1]))  # [patches, 1, head width]: the same on every head
    sin = g.op("Unsqueeze", "rope_sin", g.const([1]))
    for layer in range(int(fields["clip.vision.block_count"])):
        block = f"v.blk.{layer}"
        h = g.layer_norm(x, f"{block}.ln1", eps)
        q, k, v = (g.linear(h, f"{block}.attn_{part}") for part in ("q", "k", "v"))
        q, k = (_rotate(g, t, cos, sin, heads, head_width) for t in (q, k))
        x = g.op("Add", x, g.linear(_attention(g, q, k, v, heads, head_width), f"{block}.attn_out"))
        h = g.linear(g.layer_norm(x, f"{block}.ln2", eps), f"{block}.ffn_up")
        h = g.op("Mul", h, g.op("Sigmoid", g.op("Mul", h, g.const(np.float32(1.702), np.float32))))  # QuickGELU
        x = g.op("Add", x, g.linear(h, f"{block}.ffn_down"))
    # the merger: each 2x2 block of (normalised) patches becomes one token of the language model
    x = g.layer_norm(x, "v.post_ln", eps)
    x = g.op("Reshape", x, g.const([-1, width * 4]))
    x = g.op("Gelu", g.linear(x, "mm.0"))
    g.op("Gemm", x, "mm.2.weight", "mm.2.bias", transB=1, output="embeddings")
    return _model(g, weights["mm.2.weight"].shape[0])


def _rotate(g: GraphBuilder, t: str, cos: str, sin: str, heads: int, head_width: int) -> str:
    """x * cos + rotate_half(x) * sin per head, [patches, width] -> [patches, heads, head width]."""
    t = g.op("Reshape", t, g.const([0, heads, head_width]))
    first = g.op("Slice", t, g.const([0]), g.const([head_width // 2]), g.const([2]))
    second = g.op("Slice", t, g.const([head_width // 2]), g.const([head_width]), g.const([2]))
    turned = g.op("Concat", g.op("Neg", second), first, axis=2)
    return g.op("Add", g.op("Mul", t, cos), g.op("Mul", turned, sin))


def _attention(g: GraphBuilder, q: str, k: str, v: str, heads: int, head_width: int) -> str:
    """Full attention of [patches, heads, head width] q and k and [patches, width] v -> [patches, width].
    ONNX Runtime's fused MultiHeadAttention, whose CPU kernel is a flash attention: it never holds the
    [heads, patches, patches] scores (17 GB in float32 at 4,096 image tokens)."""
    batch = g.const([1, -1, heads * head_width])
    q, k, v = (g.op("Reshape", t, batch) for t in (q, k, v))
    out = g.op("MultiHeadAttention", q, k, v, domain="com.microsoft", num_heads=heads)
    return g.op("Reshape", out, g.const([-1, heads * head_width]))


def _model(g: GraphBuilder, text_width: int):
    helper, TensorProto = g.helper, g.TensorProto
    inputs = [
        helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["patches", None]),
        helper.make_tensor_value_info("rope_cos", TensorProto.FLOAT, ["patches", None]),
        helper.make_tensor_value_info("rope_sin", TensorProto.FLOAT, ["patches", None]),
    ]
    outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["tokens", text_width])]
    return g.model("qwen2vl_vision", inputs, outputs, domains=["com.microsoft"])
