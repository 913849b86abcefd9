"""MiniCPM-V converter: what it writes (checked against what llama.cpp reads), MiniCPM-o, bad checkpoints, and
the pieces of the vision path that must equal the reference's (position ids, patches), plus interop: llama.cpp's
own libmtmd loads the mmproj and encodes an image like edgevl does."""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import noise_image
from parity import cosine

from edgevl.engines.llamacpp import LlamaCppEngine
from edgevl.engines.minicpmv_vision import MiniCPMVVision
from edgevl.errors import CheckpointError, ModelError
from edgevl.families.minicpmv import minicpmv_patches, siglip_position_ids
from edgevl.manifest import read_manifest

gguf = pytest.importorskip("gguf")  # the convert extra
torch = pytest.importorskip("torch")  # the reference (dev extra)

from edgevl.converters import convert  # noqa: E402 - needs gguf

VERSIONS = ("2.6", "2.5")


def rewrite_checkpoint(source: Path, destination: Path, edit_state=None, edit_config=None) -> Path:
    """A copy of a checkpoint with its tensors and/or config.json changed."""
    from safetensors.torch import load_file

    from edgevl.testing.qwen2vl import save_sharded

    shutil.copytree(source, destination)
    if edit_state:
        state = {}
        for file in sorted(destination.glob("*.safetensors")):
            state.update(load_file(str(file)))
            file.unlink()
        (destination / "model.safetensors.index.json").unlink(missing_ok=True)
        edit_state(state)
        save_sharded(state, destination, 1)
    if edit_config:
        config = json.loads((destination / "config.json").read_text())
        edit_config(config)
        (destination / "config.json").write_text(json.dumps(config))
    return destination


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_writes_llm_and_resampler_mmproj(version, minicpmv_gguf):
    folder = minicpmv_gguf(version, "f32")
    manifest = read_manifest(folder)
    assert (manifest.family, manifest.chat_template) == ("minicpmv", {"2.6": "chatml", "2.5": "llama3"}[version])

    text = gguf.GGUFReader(manifest.path(folder, "text"))
    arch = {"2.6": "qwen2", "2.5": "llama"}[version]
    assert text.fields["general.architecture"].contents() == arch
    assert text.fields["tokenizer.ggml.pre"].contents() == {"2.6": "qwen2", "2.5": "llama-bpe"}[version]
    assert not any(t.name.startswith(("v.", "resampler")) for t in text.tensors)

    mmproj = gguf.GGUFReader(manifest.path(folder, "mmproj"))
    fields = {key: mmproj.fields[key].contents() for key in (
        "clip.projector_type", "clip.minicpmv_version", "clip.minicpmv_query_num", "clip.use_gelu",
        "clip.vision.image_size", "clip.vision.projection_dim")}
    assert fields == {"clip.projector_type": "resampler", "clip.minicpmv_version": {"2.6": 3, "2.5": 2}[version],
                      "clip.minicpmv_query_num": {"2.6": 64, "2.5": 96}[version], "clip.use_gelu": True,
                      "clip.vision.image_size": 448, "clip.vision.projection_dim": 256}
    shapes = {t.name: tuple(int(n) for n in t.shape[::-1]) for t in mmproj.tensors}  # numpy order
    assert shapes["resampler.pos_embed_k"] == (70 * 70, 256)
    assert shapes["resampler.attn.q.weight"] == shapes["resampler.attn.k.weight"] == (256, 256)
    assert shapes["resampler.kv.weight"] == (256, 64)
    assert shapes["v.position_embd.weight"] == (4900, 64)
    assert {"v.post_ln.weight", "v.blk.1.ffn_up.weight", "resampler.query", "resampler.proj.weight"} <= set(shapes)


def minicpm_o_checkpoint(minicpm_v_26: Path, destination: Path) -> Path:
    """MiniCPM-o 2.6 as far as edgevl is concerned: 2.6's vision and language parts plus audio and speech ones."""
    def add_audio_and_tts(state):
        state["apm.layers.0.fc1.weight"] = torch.zeros(8, 8)
        state["tts.head.weight"] = torch.zeros(8, 8)

    def as_minicpm_o(config):
        config["architectures"], config["model_type"] = ["MiniCPMO"], "minicpmo"
        del config["version"]

    return rewrite_checkpoint(minicpm_v_26, destination, add_audio_and_tts, as_minicpm_o)


@pytest.mark.slow
def test_minicpm_o_converts_its_vision_and_language_parts(minicpmv_checkpoint, tmp_path, caplog):
    source = minicpm_o_checkpoint(minicpmv_checkpoint("2.6"), tmp_path / "o")
    with caplog.at_level(logging.WARNING):
        manifest = convert(source, tmp_path / "out", quant="f16")
    assert "skipping apm, tts" in caplog.text
    mmproj = gguf.GGUFReader(manifest.path(tmp_path / "out", "mmproj"))
    assert mmproj.fields["clip.minicpmv_version"].contents() == 4  # llama.cpp's number for MiniCPM-o 2.6
    assert manifest.chat_template == "chatml"


@pytest.mark.slow
def test_a_2_5_checkpoint_without_version_converts_as_with_it(minicpmv_checkpoint, minicpmv_gguf, tmp_path, caplog):
    """The released 2.5 config.json has no `version`: the converter infers 2.5, says so, and writes the same files."""
    source = minicpmv_checkpoint("2.5")
    unversioned = rewrite_checkpoint(source, tmp_path / source.name, edit_config=lambda config: config.pop("version"))
    with caplog.at_level(logging.WARNING):
        manifest = convert(unversioned, tmp_path / "out", quant="f32", vision_quant="f32")
    assert "config.json has no 'version'; converting it as 2.5" in caplog.text
    versioned = read_manifest(minicpmv_gguf("2.5", "f32"))
    assert manifest.files == versioned.files
    assert (manifest.chat_template, manifest.system_prompt) == (versioned.chat_template, versioned.system_prompt)


@pytest.mark.slow
@pytest.mark.parametrize("edit_state, edit_config, message", [
    (None, lambda c: c.update(version=2.0), "MiniCPM-V version 2.0; edgevl converts 2.5"),
    (lambda s: s.pop("resampler.proj"), None, "tensors missing from the checkpoint: resampler.proj"),
    (lambda s: s.update({"extra.weight": torch.zeros(2)}), None, "unexpected tensors under extra"),
    (None, lambda c: c["vision_config"].pop("num_hidden_layers"), "vision_config.num_hidden_layers is missing"),
    (None, lambda c: c.update(hidden_size=200), "not a multiple of 128"),
])
def test_broken_checkpoint_gives_clear_error(edit_state, edit_config, message, minicpmv_checkpoint, tmp_path):
    source = rewrite_checkpoint(minicpmv_checkpoint("2.6"), tmp_path / "broken", edit_state, edit_config)
    with pytest.raises(CheckpointError, match=message):
        convert(source, tmp_path / "out", quant="f16")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_truncated_mmproj_is_refused(minicpmv_gguf, tmp_path):
    folder = shutil.copytree(minicpmv_gguf("2.6", "f32"), tmp_path / "model")
    mmproj = read_manifest(folder).path(folder, "mmproj")
    mmproj.write_bytes(mmproj.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="mmproj"):
        MiniCPMVVision(mmproj, ["CPUExecutionProvider"], 1)


@pytest.mark.slow
def test_vision_session_keeps_its_own_copy_of_the_weights(minicpmv_gguf):
    """MiniCPMVVision drops its float32 weights once the session exists; that is only safe while ONNX Runtime
    copies external initializers. Overwriting them after the session is made must change nothing."""
    import onnxruntime

    from edgevl.engines import minicpmv_vision, onnx_graph

    mmproj = read_manifest(minicpmv_gguf("2.6", "f32")).path(minicpmv_gguf("2.6", "f32"), "mmproj")
    vision = MiniCPMVVision(mmproj, ["CPUExecutionProvider"], 1)
    reader = gguf.GGUFReader(mmproj)
    graph, weights = minicpmv_vision._build_graph({t.name: onnx_graph.as_float32(t) for t in reader.tensors},
                                                  vision.settings)
    session = onnx_graph.create_session(onnxruntime, graph, weights, ["CPUExecutionProvider"], 1)
    vision.session = session
    image = noise_image(448, 448)
    before = vision.encode(image)
    for array in weights.values():
        array[...] = np.nan
    np.testing.assert_array_equal(vision.encode(image), before)


# --- the vision path's inputs, against the reference's own code -------------------------------------------------

@pytest.mark.parametrize("rows, cols", [(32, 32), (18, 55), (36, 29), (1, 1024), (1, 1190), (7, 3), (70, 70)])
def test_position_ids_match_idefics2(rows, cols):
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings

    embeddings = Idefics2VisionEmbeddings(Idefics2VisionConfig(hidden_size=8, image_size=980, patch_size=14))
    captured = {}
    embeddings.position_embedding.register_forward_hook(lambda m, args, out: captured.update(ids=args[0]))
    with torch.no_grad():
        embeddings(torch.zeros(1, 3, rows * 14, cols * 14), torch.ones(1, rows, cols, dtype=torch.bool))
    assert siglip_position_ids(rows, cols).tolist() == captured["ids"][0].tolist()


def test_patches_match_the_patch_embedding_convolution():
    image = noise_image(70, 42)
    patches, grid = minicpmv_patches(image, [0.5] * 3, [0.5] * 3)
    pixels = torch.from_numpy((np.asarray(image, np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    kernel = torch.randn(5, 3, 14, 14)
    expected = torch.nn.functional.conv2d(pixels, kernel, stride=14).flatten(2)[0].T
    assert grid == (3, 5)
    np.testing.assert_allclose(patches @ kernel.reshape(5, -1).numpy().T, expected.numpy(), atol=1e-4)


# --- interop: llama.cpp's own multimodal library reads the mmproj -----------------------------------------------

def mtmd_image_embeddings(engine: LlamaCppEngine, image) -> np.ndarray:
    """The embeddings llama.cpp's libmtmd computes for an image that needs no slicing (its own preprocessing)."""
    from llama_cpp import mtmd_cpp as mtmd

    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        marker = engine._marker.encode()
        text = mtmd.mtmd_input_text(marker, len(marker), False, True)
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(engine._mctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        images = [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))
                  if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i))
                  == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE]
        assert len(images) == 1
        assert mtmd.mtmd_encode_chunk(engine._mctx, images[0]) == 0
        count = mtmd.mtmd_input_chunk_get_n_tokens(images[0])
        return np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(engine._mctx), shape=(count, 256)).copy()
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_llama_cpp_mtmd_reads_the_mmproj(version, minicpmv_gguf):
    """The default output (f16 mmproj) in llama.cpp's own multimodal path. For 2.6 and a 448x448 image (no
    resize, no slices on either side) llama.cpp's clip gives edgevl's embeddings. For 2.5 it cannot: llama.cpp
    lays the patches out as a grid where the release uses one row."""
    folder = minicpmv_gguf(version, "f16")
    image = noise_image(448, 448, seed=5)
    with LlamaCppEngine(folder, threads=2) as engine:
        theirs = mtmd_image_embeddings(engine, image)
    vision = MiniCPMVVision(read_manifest(folder).path(folder, "mmproj"), ["CPUExecutionProvider"], 2)
    ours = vision.encode(image)
    similarity = cosine(theirs.ravel(), ours.ravel())
    print(f"{version}: llama.cpp's clip vs edgevl, 448x448: cosine {similarity:.6f}, "
          f"max|d| {np.abs(theirs - ours).max():.2e}")
    assert theirs.shape == ours.shape == ({"2.6": 64, "2.5": 96}[version], 256)
    if version == "2.6":
        assert similarity > 0.9999
    else:
        assert np.isfinite(theirs).all()
