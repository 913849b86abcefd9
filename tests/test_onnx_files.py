"""Saving ONNX graphs: the external-data decision counts the weights' bytes, so graphs over protobuf's 2 GB limit
(where `ModelProto.ByteSize()` fails) are saved with a weights file instead of failing."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402

from edgevl.converters import onnx_files  # noqa: E402


def graph_with_weights(weight: np.ndarray, constant: np.ndarray) -> onnx.ModelProto:
    """y = x @ weight + constant, the constant held by a Constant node (an attribute tensor, not an initializer)."""
    nodes = [
        helper.make_node("Constant", [], ["bias"], value=numpy_helper.from_array(constant, "bias")),
        helper.make_node("MatMul", ["x", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "weights", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight, "weight")])
    return helper.make_model(graph)


def test_tensor_bytes_counts_initializers_and_constants():
    model = graph_with_weights(np.ones((64, 32), np.float32), np.ones(32, np.float32))
    assert onnx_files.tensor_bytes(model) == 64 * 32 * 4 + 32 * 4


def test_small_graph_is_one_file(tmp_path):
    model = graph_with_weights(np.ones((8, 4), np.float32), np.ones(4, np.float32))
    assert onnx_files.save(model, tmp_path / "small.onnx") == [tmp_path / "small.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]


def test_graph_over_the_limit_gets_a_weights_file(tmp_path, monkeypatch):
    """The limit is lowered so a small graph stands in for one over 2 GB; the weights load back unchanged."""
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_BYTES", 4096)
    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    written = onnx_files.save(graph_with_weights(weight, np.ones(32, np.float32)), tmp_path / "big.onnx")
    assert written == [tmp_path / "big.onnx", tmp_path / "big.onnx.data"]
    assert (tmp_path / "big.onnx").stat().st_size < 4096 < (tmp_path / "big.onnx.data").stat().st_size
    loaded = onnx_files.load(tmp_path / "big.onnx")
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weight)
    onnx_files.check(tmp_path / "big.onnx")
