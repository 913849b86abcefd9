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
    loaded = onnx.load_model(str(tmp_path / "big.onnx"), load_external_data=True)
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weight)
    onnx_files.check(tmp_path / "big.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int4"])
def test_weightless_export_streams_weights_and_large_graphs_keep_their_data_file(tmp_path, monkeypatch, precision,
                                                                                 checkpoint_dtype):
    """A module traced weightless gets its weights from the `weights` callback (Linear weights given [out, in],
    as checkpoints store them); with the limit lowered so that the graph counts as large, every precision keeps a
    data file beside the graph, and ONNX Runtime computes what torch computes with those weights. A bf16
    checkpoint's weights (float32 values that are all bf16) are staged in bf16, in half the disk."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from edgevl.converters import onnx_export

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = torch.nn.Linear(64, 128), torch.nn.Linear(128, 96)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    with onnx_export.parameters_on_meta():
        traced = Net()
    sources = onnx_export.weightless_model(traced)
    reference = Net().eval()  # random weights: the "checkpoint"
    reference.to(getattr(torch, checkpoint_dtype)).float()  # a bf16 checkpoint, widened as converters load it
    state = {name: value.detach().numpy() for name, value in reference.state_dict().items()}
    weights = onnx_export.named_weights(traced, sources, state.__getitem__)
    exported = tmp_path / "scratch" / "net.onnx"
    exported.parent.mkdir()
    x = torch.randn(1, 3, 64)
    with torch.no_grad():
        onnx_export.export(traced, (x,), exported, ["x"], ["y"], {"x": {1: "seq"}}, weights)
        expected = reference(x).numpy()
    staged_bytes = exported.with_name("net.onnx.data").stat().st_size
    parameter_count = sum(value.numel() for value in reference.parameters())
    assert staged_bytes == parameter_count * (2 if checkpoint_dtype == "bfloat16" else 4)

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_BYTES", 4096)
    written = onnx_files.write_graph(exported, tmp_path / "net.onnx", precision, onnx_files.Int4Options())
    assert written == [tmp_path / "net.onnx", tmp_path / "net.onnx.data"]
    onnx_files.check(written[0])
    session = ort.InferenceSession(str(written[0]), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    tolerance = {"fp32": 1e-5, "fp16": 1e-2, "int4": 0.15}[precision]
    assert np.abs(got - expected).max() < tolerance * np.abs(expected).max()
