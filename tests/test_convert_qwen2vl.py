"""The converter: what it writes, and that bad input gets a clear error and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest

from edgevl.errors import CheckpointError, EdgevlError
from edgevl.manifest import read_manifest
from edgevl.model_files import check_model_files

gguf = pytest.importorskip("gguf")  # the convert extra

from edgevl.converters import checkpoint as checkpoint_module  # noqa: E402 - needs gguf
from edgevl.converters import convert, gguf_files  # noqa: E402
from edgevl.converters.gguf_files import QUANTS, quantize_with_llama_cpp  # noqa: E402


def copy_checkpoint(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_writes_text_and_mmproj_with_manifest(qwen2vl_gguf):
    folder = qwen2vl_gguf("q4_k_m", "f16")
    manifest = read_manifest(folder)
    described = (manifest.format, manifest.family, manifest.quant, manifest.vision_quant)
    assert described == ("gguf", "qwen2vl", "q4_k_m", "f16")
    check_model_files(folder, manifest, verify=True)
    listed = [e.name for e in manifest.files.values()]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*listed, "edgevl.json"])

    text = gguf.GGUFReader(manifest.path(folder, "text"))
    assert text.fields["general.architecture"].contents() == "qwen2vl"
    assert text.fields["qwen2vl.rope.dimension_sections"].contents() == [8, 12, 12, 0]
    assert text.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert "<|vision_start|>" in text.fields["tokenizer.chat_template"].contents()
    types = {t.name: t.tensor_type for t in text.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q4_K
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32

    mmproj = gguf.GGUFReader(manifest.path(folder, "mmproj"))
    assert mmproj.fields["clip.projector_type"].contents() == "qwen2vl_merger"
    names = {t.name: t for t in mmproj.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1", "v.blk.0.attn_q.weight", "mm.2.weight"} <= set(names)
    assert names["v.blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16


@pytest.mark.slow
def test_k_quant_is_llama_quantize_bit_for_bit(qwen2vl_gguf, tmp_path):
    """Our q4_k_m file equals llama.cpp's quantizer run by hand on the lossless f32 file."""
    ours = read_manifest(qwen2vl_gguf("q4_k_m", "f16"))
    f32 = qwen2vl_gguf("f32")
    by_hand = tmp_path / "by-hand.gguf"
    quantize_with_llama_cpp(read_manifest(f32).path(f32, "text"), by_hand, QUANTS["q4_k_m"])
    ours_reader = gguf.GGUFReader(ours.path(qwen2vl_gguf("q4_k_m", "f16"), "text"))
    ours_data = {t.name: bytes(t.data) for t in ours_reader.tensors}
    by_hand_data = {t.name: bytes(t.data) for t in gguf.GGUFReader(by_hand).tensors}
    assert ours_data == by_hand_data


@pytest.mark.slow
def test_bf16_checkpoint_is_widened_exactly(tmp_path):
    from safetensors.torch import load_file

    from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint

    bf16 = build_qwen2vl_checkpoint(tmp_path / "bf16", dtype="bfloat16", shards=1)
    stored = load_file(bf16 / "model.safetensors")
    tensors = checkpoint_module.Checkpoint(bf16).tensors
    for name in ("model.norm.weight", "model.layers.0.mlp.up_proj.weight", "visual.patch_embed.proj.weight"):
        widened = tensors[name].load()
        assert widened.dtype == np.float32
        assert np.array_equal(widened, stored[name].float().numpy())
    manifest = convert(bf16, tmp_path / "out", quant="bf16")
    assert manifest.source["dtype"] == "BF16"


@pytest.mark.slow
def test_transformers5_layout_converts_to_the_same_tensors(qwen2vl_checkpoint, qwen2vl_gguf, tmp_path):
    """A checkpoint saved by transformers 5 (model.language_model.*, nested text_config) gives the same GGUF."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(qwen2vl_checkpoint, dtype=torch.float32)
    resaved = tmp_path / "resaved"
    model.save_pretrained(resaved)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(qwen2vl_checkpoint / name, resaved / name)
    assert "text_config" in json.loads((resaved / "config.json").read_text())
    manifest = convert(resaved, tmp_path / "out", quant="f32", vision_quant="f32")
    reference = qwen2vl_gguf("f32")
    ours = {t.name: bytes(t.data) for t in gguf.GGUFReader(manifest.path(tmp_path / "out", "text")).tensors}
    theirs = {t.name: bytes(t.data) for t in gguf.GGUFReader(read_manifest(reference).path(reference, "text")).tensors}
    assert ours == theirs


@pytest.mark.slow
def test_reads_one_tensor_at_a_time(qwen2vl_checkpoint, tmp_path, monkeypatch):
    """Peak memory is about one tensor, not the model: count the loaded arrays alive at any moment."""
    alive, peak = [0], [0]
    original_load = checkpoint_module.LazyTensor.load

    def counting_load(self):
        array = original_load(self)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(array, lambda: alive.__setitem__(0, alive[0] - 1))
        return array

    monkeypatch.setattr(checkpoint_module.LazyTensor, "load", counting_load)
    convert(qwen2vl_checkpoint, tmp_path / "out", quant="f16")
    assert 1 <= peak[0] <= 2


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "model-00002-of-00002.safetensors").unlink(), "missing: model-00002-of-00002.safetensors"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda d: (d / "config.json").write_text('{"architectures": ["LlavaForConditionalGeneration"]}'),
     "architecture 'LlavaForConditionalGeneration' is not supported"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
])
def test_broken_checkpoint_gives_clear_error(damage, message, qwen2vl_checkpoint, tmp_path):
    broken = copy_checkpoint(qwen2vl_checkpoint, tmp_path / "broken")
    damage(broken)
    with pytest.raises(CheckpointError, match=message):
        convert(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_truncated_shard(qwen2vl_checkpoint, tmp_path):
    broken = copy_checkpoint(qwen2vl_checkpoint, tmp_path / "broken")
    shard = broken / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        convert(broken, tmp_path / "out")


def test_refuses_to_unpickle(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["Qwen2VLForConditionalGeneration"]}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        convert(folder, tmp_path / "out")


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        convert(tmp_path / "missing", tmp_path / "out")


@pytest.mark.slow
def test_full_disk_midway_leaves_nothing(qwen2vl_checkpoint, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert(qwen2vl_checkpoint, tmp_path / "out", quant="q4_k_m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_existing_output_is_kept_unless_forced(qwen2vl_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(EdgevlError, match="already exists"):
        convert(qwen2vl_checkpoint, out, quant="f16")
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(EdgevlError, match="not an edgevl model folder"):  # --force replaces model folders only
        convert(qwen2vl_checkpoint, out, quant="f16", overwrite=True)
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    convert(qwen2vl_checkpoint, out, quant="f16", overwrite=True)  # an empty folder
    convert(qwen2vl_checkpoint, out, quant="q8_0", overwrite=True)  # a model folder
    assert read_manifest(out).quant == "q8_0"
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_unknown_quant(qwen2vl_checkpoint, tmp_path):
    with pytest.raises(EdgevlError, match="unknown quant 'q3_xs'"):
        convert(qwen2vl_checkpoint, tmp_path / "out", quant="q3_xs")
    with pytest.raises(EdgevlError, match="unknown quant 'q4_k_m'"):
        convert(qwen2vl_checkpoint, tmp_path / "out", vision_quant="q4_k_m")


def test_storage_types():
    f16 = gguf.GGMLQuantizationType.F16
    q8 = gguf.GGMLQuantizationType.Q8_0
    assert gguf_files.storage_type((256,), q8) == gguf.GGMLQuantizationType.F32
    assert gguf_files.storage_type((256, 64), q8) == q8
    assert gguf_files.storage_type((256, 48), q8) == f16  # rows must be whole Q8_0 blocks of 32


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0"])
def test_a_checkpoint_tensor_is_written_a_block_of_rows_at_a_time(tmp_path, qtype):
    """Large tensors (a 7B's embedding is 2.2 GB in float32) are read and encoded by blocks of rows; the blocks
    together are the tensor encoded whole, for every type."""
    from safetensors.numpy import save_file

    values = np.random.default_rng(0).standard_normal((300, 256)).astype(np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # stored as a bf16 checkpoint stores it
    save_file({"w": bf16}, str(tmp_path / "model.safetensors"))
    header = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(header[:8], "little")
    source = checkpoint_module.LazyTensor("w", "BF16", (300, 256), tmp_path / "model.safetensors", 8 + header_len,
                                          bf16.nbytes)
    planned = gguf_files.PlannedTensor.of("token_embd.weight", source, getattr(gguf.GGMLQuantizationType, qtype))
    blocks = list(planned.encoded_blocks(block_bytes=256 * 4 * 7))  # 7 rows a block: the last one shorter
    assert len(blocks) == 43
    whole = planned.encode()
    assert np.array_equal(np.concatenate(blocks), whole) and whole.nbytes == planned.nbytes()
