"""Qwen2.5-VL -> GGUF: the mmproj says what llama.cpp's `qwen2.5vl_merger` graph needs (gated SiLU MLP, the
full-attention period, RMSNorm weights without biases), the text model is Qwen2-VL's `qwen2vl` arch, and
checkpoints whose windows llama.cpp cannot run are refused with one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgevl.errors import CheckpointError
from edgevl.manifest import read_manifest

gguf = pytest.importorskip("gguf")

from edgevl.converters import convert  # noqa: E402 - needs gguf

pytestmark = pytest.mark.slow  # every test builds the tiny checkpoint


def test_writes_qwen25vl_merger_mmproj_and_qwen2vl_text(qwen25vl_gguf):
    folder = qwen25vl_gguf("q8_0", "f16")
    manifest = read_manifest(folder)
    assert (manifest.family, manifest.source["architecture"]) == ("qwen25vl", "Qwen2_5_VLForConditionalGeneration")

    text = gguf.GGUFReader(manifest.path(folder, "text"))
    assert text.fields["general.architecture"].contents() == "qwen2vl"
    assert text.fields["qwen2vl.rope.dimension_sections"].contents() == [8, 12, 12, 0]

    mmproj = gguf.GGUFReader(manifest.path(folder, "mmproj"))
    fields = {name: mmproj.fields[name].contents() for name in (
        "clip.projector_type", "clip.use_silu", "clip.vision.n_wa_pattern", "clip.vision.window_size",
        "clip.vision.embedding_length", "clip.vision.feed_forward_length", "clip.vision.block_count")}
    assert fields == {"clip.projector_type": "qwen2.5vl_merger", "clip.use_silu": True, "clip.vision.n_wa_pattern": 2,
                      "clip.vision.window_size": 112, "clip.vision.embedding_length": 128,
                      "clip.vision.feed_forward_length": 320, "clip.vision.block_count": 4}
    names = {t.name for t in mmproj.tensors}
    assert {"v.blk.3.ffn_gate.weight", "v.blk.3.ffn_up.bias", "v.blk.3.ffn_down.weight", "v.blk.0.ln1.weight",
            "v.post_ln.weight", "mm.0.weight", "mm.2.bias", "v.patch_embd.weight.1"} <= names
    assert not {"v.blk.0.ln1.bias", "v.post_ln.bias"} & names  # RMSNorm: weights only


@pytest.mark.parametrize("vision_change, message", [
    ({"fullatt_block_indexes": [1, 2]}, r"indexes \[1, 2\] - llama.cpp needs every n-th \(n > 1\) of the 4 blocks"),
    ({"fullatt_block_indexes": []}, r"fullatt_block_indexes \[\]"),
    ({"fullatt_block_indexes": [0, 1, 2, 3]}, r"every n-th \(n > 1\)"),
    ({"window_size": 224}, "window_size 224 - llama.cpp runs Qwen2.5-VL with 112 px windows only"),
])
def test_windows_llama_cpp_cannot_run_are_refused(vision_change, message, qwen25vl_checkpoint, tmp_path):
    broken = Path(shutil.copytree(qwen25vl_checkpoint, tmp_path / "broken"))
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"].update(vision_change)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        convert(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_llama_cpp_style_files_are_imported_as_qwen25vl(qwen25vl_gguf, tmp_path):
    from edgevl.gguf_import import import_gguf

    converted = qwen25vl_gguf("q8_0", "f16")
    manifest = read_manifest(converted)
    folder, _ = import_gguf(manifest.path(converted, "text"), manifest.path(converted, "mmproj"), tmp_path / "model")
    assert read_manifest(folder).family == "qwen25vl"
