"""ONNX graphs built in code from a GGUF's tensors, run by ONNX Runtime: the vision encoders of
edgevl.engines.minicpmv_vision and edgevl.engines.qwen2vl_vision.

The weights never pass through protobuf: each is an initializer marked external ("in-memory") and handed to the
session with SessionOptions.add_external_initializers, so there is no 2 GB limit and no copy in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OPSET = 20  # Gelu with the tanh approximation
IR_VERSION = 10


def as_float32(tensor) -> np.ndarray:
    """A GGUF tensor as a float32 array in numpy order, copied out of the memory-mapped file."""
    from gguf import GGMLQuantizationType as QType
    from gguf.quants import dequantize

    if tensor.tensor_type in (QType.F32, QType.F16):
        return np.array(tensor.data, dtype=np.float32)
    return np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


class GraphBuilder:
    """A tiny helper over onnx.helper: every node gets a fresh output name; weights are named by GGUF tensor."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        from onnx import TensorProto, helper

        self.helper, self.TensorProto = helper, TensorProto
        self.weights = weights
        self.nodes: list = []
        self.constants: list = []
        self._count = 0

    def op(self, op_type: str, *inputs: str, output: str = "", **attributes) -> str:
        self._count += 1
        output = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def const(self, values, dtype=np.int64) -> str:
        name = f"const_{len(self.constants)}"
        self.constants.append(self.helper.make_tensor(name, self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                      np.shape(values), np.asarray(values, dtype).ravel()))
        return name

    def linear(self, x: str, prefix: str) -> str:
        """x @ W^T + b with W stored [out, in] as in the GGUF (Gemm transposes it, no copy)."""
        bias = f"{prefix}.bias"
        inputs = (x, f"{prefix}.weight") + ((bias,) if bias in self.weights else ())
        return self.op("Gemm", *inputs, transB=1)

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op("LayerNormalization", x, f"{prefix}.weight", f"{prefix}.bias", axis=-1, epsilon=eps)

    def attention(self, q: str, k: str, v: str, heads: int, head_width: int) -> str:
        """Full multi-head attention of 2-D [tokens, width] q / k / v -> [queries, heads*head_width]."""
        split = self.const([0, heads, head_width])  # 0 keeps the token count
        q, k, v = (self.op("Transpose", self.op("Reshape", t, split), perm=[1, 0, 2]) for t in (q, k, v))
        scores = self.op("Mul", self.op("MatMul", q, self.op("Transpose", k, perm=[0, 2, 1])),
                         self.const(np.float32(head_width ** -0.5), np.float32))
        out = self.op("MatMul", self.op("Softmax", scores, axis=-1), v)
        return self.op("Reshape", self.op("Transpose", out, perm=[1, 0, 2]), self.const([0, heads * head_width]))

    def model(self, name: str, inputs: list, outputs: list, domains: Sequence[str] = ()):
        """(the ONNX model, the weights its nodes use), the weights as external initializers; `domains` are the
        operator domains beyond the standard one (version 1 each, e.g. "com.microsoft")."""
        helper = self.helper
        used = {input_name for node in self.nodes for input_name in node.input}
        weights = {weight: array for weight, array in self.weights.items() if weight in used}
        initializers = [self._external(weight, array) for weight, array in weights.items()]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializers + self.constants)
        opsets = [helper.make_opsetid("", OPSET), *(helper.make_opsetid(domain, 1) for domain in domains)]
        return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION), weights

    def _external(self, name: str, array: np.ndarray):
        """An initializer whose data ONNX Runtime gets from SessionOptions.add_external_initializers."""
        TensorProto = self.TensorProto
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape,
                             data_location=TensorProto.EXTERNAL)
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "in-memory"
        return tensor


def create_session(onnxruntime, graph, weights: dict[str, np.ndarray], providers: list[str], threads: int):
    """An inference session for the graph, its weights handed over as external initializers. ONNX Runtime copies
    them into its own buffers (on the GPU, or prepacked for the CPU), so the caller's arrays can go right after
    (tests/test_convert_minicpmv.py checks that the session does not read them)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    names = list(weights)
    options.add_external_initializers(names, [onnxruntime.OrtValue.ortvalue_from_numpy(weights[n]) for n in names])
    return onnxruntime.InferenceSession(graph.SerializeToString(), options, providers=providers)
