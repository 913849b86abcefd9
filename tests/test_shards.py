"""Random checkpoints written shard by shard (edgevl.testing.shards): what the real-size measurements build."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from edgevl.converters.checkpoint import Checkpoint  # noqa: E402
from edgevl.testing.shards import write_random_shards  # noqa: E402

pytestmark = pytest.mark.slow

SHAPES = {"model.embed_tokens.weight": (64, 32), "model.norm.weight": (32,), "layer.bias": (32,),
          "lm_head.weight": (64, 32)}


def test_random_shards_split_by_bytes_and_read_back(tmp_path):
    """bf16 tensors (two of 4 KB, two of 64 bytes) into shards of at most 4100 bytes: three shards and an index,
    read back with their shapes; norm weights near 1, biases small and non-zero, the rest normal with the
    initializer range."""
    write_random_shards(tmp_path, SHAPES, "bfloat16", seed=0, shard_bytes=4100)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
        "model.safetensors.index.json"]
    (tmp_path / "config.json").write_text("{}")
    loaded = Checkpoint(tmp_path).tensors
    assert {name: tensor.shape for name, tensor in loaded.items()} == SHAPES
    assert {tensor.dtype for tensor in loaded.values()} == {"BF16"}
    norm, bias, embedding = (loaded[name].load() for name in ("model.norm.weight", "layer.bias",
                                                               "model.embed_tokens.weight"))
    assert np.all(np.abs(norm - 1) <= 0.2) and norm.std() > 0.01
    assert np.all(np.abs(bias) <= 0.05) and np.all(bias != 0)
    assert abs(embedding.std() - 0.02) < 0.005


def test_random_shards_are_deterministic(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_random_shards(tmp_path / folder, SHAPES, "float32", seed=3)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_streamed_minicpmv_checkpoint_has_the_released_names_and_shapes(tmp_path):
    from edgevl.testing.minicpmv import build_minicpmv_checkpoint

    initialised = Checkpoint(build_minicpmv_checkpoint(tmp_path / "initialised", "2.6"))
    streamed = Checkpoint(build_minicpmv_checkpoint(tmp_path / "streamed", "2.6", dtype="bfloat16", streamed=True))
    assert {n: t.shape for n, t in streamed.tensors.items()} == {n: t.shape for n, t in initialised.tensors.items()}
    assert streamed.config == {**initialised.config, "torch_dtype": "bfloat16"}
