"""The random test checkpoints: the streamed builder (real sizes, one shard in memory) writes what the
materialising one writes, and an untied lm_head (as the 7B ships) converts."""

from __future__ import annotations

import json

import pytest


def tensors(folder) -> dict:
    """name -> (shape, dtype, file) of every tensor in a checkpoint folder."""
    from safetensors import safe_open

    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, "pt") as shard:
            for name in shard.keys():
                view = shard.get_slice(name)
                found[name] = (tuple(view.get_shape()), view.get_dtype(), path.name)
    return found


@pytest.mark.slow
def test_streamed_build_writes_the_released_layout_a_shard_at_a_time(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    from edgevl.testing.qwen2vl import Qwen2VLSize, build_qwen2vl_checkpoint

    size = Qwen2VLSize(tie_word_embeddings=False, vocab_size=152064)  # the 7B's padded vocabulary, untied
    streamed = build_qwen2vl_checkpoint(tmp_path / "streamed", size, dtype="bfloat16", shards=4, streamed=True)
    built = build_qwen2vl_checkpoint(tmp_path / "built", size, dtype="bfloat16", shards=4)

    written, expected = tensors(streamed), tensors(built)
    assert {k: v[:2] for k, v in written.items()} == {k: v[:2] for k, v in expected.items()}
    assert "lm_head.weight" in written
    index = json.loads((streamed / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {name: found[2] for name, found in written.items()}
    shard_bytes = [path.stat().st_size for path in sorted(streamed.glob("*.safetensors"))]
    largest = max(2 * torch.Size(shape).numel() for shape, _, _ in written.values())
    assert max(shard_bytes) <= index["metadata"]["total_size"] / 4 + largest + (1 << 20)  # a share, not the model

    state = {}
    for path in streamed.glob("*.safetensors"):
        state.update(load_file(path))
    weight, bias, norm = (state[name].float() for name in
                          ("model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.bias",
                           "model.layers.0.input_layernorm.weight"))
    assert abs(weight.std().item() - 0.02) < 2e-3 and not bias.any()  # as transformers initialises them
    assert 0.8 <= norm.min().item() < norm.max().item() <= 1.21  # spread, as spread_norm_weights does

    model = Qwen2VLForConditionalGeneration.from_pretrained(streamed, dtype=torch.float32)
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[-1] == 152064 and torch.isfinite(logits).all()


@pytest.mark.slow
def test_an_untied_checkpoint_converts_to_gguf_and_onnx(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from edgevl.converters import convert
    from edgevl.testing.qwen2vl import Qwen2VLSize, build_qwen2vl_checkpoint
    from edgevl.verify import verify_conversion

    checkpoint = build_qwen2vl_checkpoint(tmp_path / "untied", Qwen2VLSize(tie_word_embeddings=False),
                                          dtype="bfloat16", streamed=True)
    convert(checkpoint, tmp_path / "gguf", quant="f16", threads=2)
    convert(checkpoint, tmp_path / "onnx", to="onnx", quant="fp16", threads=2)
    # the lm_head is its own tensor: the embedding in its place would fail the comparison
    for folder in ("gguf", "onnx"):
        verification = verify_conversion(tmp_path / folder, threads=2)
        assert verification.status == "passed", verification.summary()


@pytest.mark.slow
def test_streamed_minicpmv_build_writes_the_released_layout(tmp_path):
    pytest.importorskip("torch")
    from edgevl.testing.minicpmv import build_minicpmv_checkpoint

    streamed = build_minicpmv_checkpoint(tmp_path / "streamed", "2.6", dtype="bfloat16", shards=3, streamed=True)
    built = build_minicpmv_checkpoint(tmp_path / "built", "2.6", dtype="bfloat16", shards=3)
    written, expected = tensors(streamed), tensors(built)
    assert {k: v[:2] for k, v in written.items()} == {k: v[:2] for k, v in expected.items()}
    assert json.loads((streamed / "config.json").read_text()) == json.loads((built / "config.json").read_text())
