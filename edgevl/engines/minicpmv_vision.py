"""MiniCPM-V's vision side (SigLIP + perceiver resampler) run by ONNX Runtime from the weights of the mmproj GGUF.

Why not libmtmd: llama.cpp preprocesses MiniCPM-V its own way - images that need no slicing are squashed to
448x448, slicing starts when a side passes 448 px (the release slices by area), its bicubic resize is not PIL's,
2.6's `<image_id>` tokens are missing and 2.5's one-row patch positions become 2-D - and it offers no way to
hand it slices cut elsewhere. So edgevl slices as the release does (edgevl.families.minicpmv), encodes each slice
with this graph, and feeds the embeddings to llama.cpp's language model. The mmproj stays a standard llama.cpp file,
so the same folder also works with llama-mtmd-cli, Ollama or LM Studio (with their preprocessing).

The graph is built in memory at load time; its weights are the GGUF's tensors widened to float32 and handed to
ONNX Runtime as external initializers (no protobuf copy, no 2 GB limit), which ONNX Runtime copies and keeps.
One run encodes one slice: patches [N, 3*14*14], SigLIP position ids [N] and the resampler's key positions
[N, width] in, [queries, width] out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgevl.engines.onnx_graph import GraphBuilder, as_float32, create_session
from edgevl.errors import BackendUnavailable, ModelError
from edgevl.families.minicpmv import QUERY_NUM, RESAMPLER_HEAD_WIDTH, VisionSettings, vision_inputs
from edgevl.model_files import check_gguf

#: clip.minicpmv_version -> release; llama.cpp numbers MiniCPM-o 2.6 as 4 (same vision path as 2.6)
RELEASES = {2: "2.5", 3: "2.6", 4: "2.6"}


class MiniCPMVVision:
    """Encodes MiniCPM-V slices into language-model embeddings."""

    def __init__(self, mmproj: Path, providers: list[str], threads: int) -> None:
        try:
            import gguf
            import onnxruntime
        except ImportError as error:
            raise BackendUnavailable(f"MiniCPM-V models need gguf and onnxruntime ({error}): "
                                     "pip install 'edgevl[gguf]'") from None
        check_gguf(mmproj)  # GGUFReader trusts the header's counts and offsets
        try:
            reader = gguf.GGUFReader(mmproj)
            self.settings = _read_settings(reader, mmproj)
            graph, weights = _build_graph({t.name: as_float32(t) for t in reader.tensors}, self.settings)
        except ModelError:
            raise
        except Exception as error:  # GGUFReader raises ValueError, IndexError, KeyError... for bad files
            raise ModelError(f"{mmproj}: not a readable MiniCPM-V projector "
                             f"({type(error).__name__}: {error})") from None
        del reader  # unmaps the file: every weight was copied out of it
        try:
            self.session = create_session(onnxruntime, graph, weights, providers, threads)
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise ModelError(f"{mmproj}: ONNX Runtime could not build the MiniCPM-V vision graph ({error})") from None
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def encode(self, piece: Image.Image) -> np.ndarray:
        """One slice (or overview) in whole patches -> [query_num, width] embeddings."""
        return self.session.run(None, vision_inputs(piece, self.settings))[0]

    def close(self) -> None:
        self.session = None


def _read_settings(reader, path: Path) -> VisionSettings:
    def field(key: str, default=None):
        if key in reader.fields:
            return reader.fields[key].contents()
        if default is None:
            raise ModelError(f"{path}: '{key}' is missing; convert the model again with `edgevl convert`")
        return default

    if field("clip.projector_type") != "resampler":
        raise ModelError(f"{path}: not a MiniCPM-V vision projector (projector type {field('clip.projector_type')})")
    version = field("clip.minicpmv_version")
    if version not in RELEASES:
        raise ModelError(f"{path}: MiniCPM-V version {version} in llama.cpp's numbering; edgevl runs 2 (2.5), "
                         "3 (2.6) and 4 (MiniCPM-o 2.6)")
    return VisionSettings(
        release=RELEASES[version],
        query_num=field("clip.minicpmv_query_num", QUERY_NUM[RELEASES[version]]),
        width=field("clip.vision.projection_dim"),
        layers=field("clip.vision.block_count"),
        heads=field("clip.vision.attention.head_count"),
        eps=field("clip.vision.attention.layer_norm_epsilon"),
        patch=field("clip.vision.patch_size"),
        slice_size=field("clip.vision.image_size"),
        mean=field("clip.vision.image_mean"),
        std=field("clip.vision.image_std"),
    )


def _build_graph(weights: dict[str, np.ndarray], settings: VisionSettings):
    """(the ONNX model, the weights it uses) for the mmproj's tensors (GGUF names, numpy order)."""
    g = GraphBuilder(weights)
    eps, heads = settings.eps, settings.heads
    vision_width = weights["v.patch_embd.weight"].shape[0]
    # the 14x14 convolution with stride 14 is a matrix product over flattened patches
    patch_matrix = g.op("Flatten", "v.patch_embd.weight", axis=1)
    x = g.op("Gemm", "patches", patch_matrix, "v.patch_embd.bias", transB=1)
    x = g.op("Add", x, g.op("Gather", "v.position_embd.weight", "position_ids", axis=0))

    for layer in range(settings.layers):
        block = f"v.blk.{layer}"
        h = g.layer_norm(x, f"{block}.ln1", eps)
        q, k, v = (g.linear(h, f"{block}.attn_{part}") for part in ("q", "k", "v"))
        x = g.op("Add", x, g.linear(g.attention(q, k, v, heads, vision_width // heads), f"{block}.attn_out"))
        h = g.layer_norm(x, f"{block}.ln2", eps)
        h = g.op("Gelu", g.linear(h, f"{block}.ffn_up"), approximate="tanh")
        x = g.op("Add", x, g.linear(h, f"{block}.ffn_down"))
    if "v.post_ln.weight" in weights:
        x = g.layer_norm(x, "v.post_ln", eps)

    # the resampler: learned queries attend once to the slice; the keys carry the 2-D sin-cos positions
    kv = g.layer_norm(g.linear(x, "resampler.kv"), "resampler.ln_kv", eps)
    query = g.layer_norm("resampler.query", "resampler.ln_q", eps)
    q = g.linear(query, "resampler.attn.q")
    k = g.linear(g.op("Add", kv, "key_positions"), "resampler.attn.k")
    v = g.linear(kv, "resampler.attn.v")
    attention = g.attention(q, k, v, settings.resampler_heads, RESAMPLER_HEAD_WIDTH)
    out = g.linear(attention, "resampler.attn.out")
    out = g.layer_norm(out, "resampler.ln_post", eps)
    g.op("Gemm", out, "resampler.proj.weight", transB=1, output="embeddings")
    return _model(g, settings)


def _model(g: GraphBuilder, settings: VisionSettings):
    helper, TensorProto = g.helper, g.TensorProto
    patch_values = 3 * settings.patch ** 2
    inputs = [
        helper.make_tensor_value_info("patches", TensorProto.FLOAT, ["patches", patch_values]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["patches"]),
        helper.make_tensor_value_info("key_positions", TensorProto.FLOAT, ["patches", settings.width]),
    ]
    outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [settings.query_num, settings.width])]
    return g.model("minicpmv_vision", inputs, outputs)


def standalone_graph(shapes: dict[str, tuple[int, ...]], settings: VisionSettings):
    """The same graph for saving as a file (`edgevl convert --to onnx`), built from the weights' shapes (numpy
    order, under the mmproj's tensor names) alone: its weights are float32 initializers marked external, for the
    exporter to write."""
    # zero-stride views: the builder only asks a weight for its shape
    placeholders = {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}
    return _build_graph(placeholders, settings)[0]
