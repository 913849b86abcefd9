"""ONNX output: precision variants, saving (external data past protobuf's 2 GB), validation.

int4 uses ONNX Runtime's own weight-only quantizer (MatMul -> MatMulNBits, block-wise, symmetric by default)
on the decoder; the embedding table and the vision tower are stored fp16, which is where most of the size is
after the decoder is int4 (quantizing the vision tower costs OCR accuracy).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx is imported where it is used: GGUF conversion must work without the export extra
    import onnx

ONNX_QUANTS = ("int4", "fp16", "fp32")
#: above this a graph keeps its weights in a side file: protobuf cannot hold more than 2 GB
EXTERNAL_DATA_BYTES = 1_500_000_000
#: onnx.TensorProto's element types, named here so that this module imports onnx only where it uses it
FLOAT16, BFLOAT16 = 10, 16
#: the decoder's output projection node, as the exporters trace it (an `lm_head` module)
OUTPUT_PROJECTION = "/lm_head/MatMul"


@dataclass(frozen=True)
class Int4Options:
    block_size: int = 32
    # asymmetric (a zero point per block) measured closer to fp32 than symmetric on our test models
    symmetric: bool = False
    accuracy_level: int = 4  # int8 activations in the MatMulNBits kernel: the fast CPU path


#: exports the fp32 graphs into a scratch folder, calling the second argument after each; returns {role: path}
ExportGraphs = Callable[[Path, Callable[[], None]], dict[str, Path]]


def write_model_folder(folder: Path, quant: str, int4: Int4Options, progress, export: ExportGraphs,
                       tokenizer: Path, engine_config: dict) -> dict[str, Path]:
    """What every family's ONNX export writes: its graphs at `quant` - int4 makes the decoder int4 and the other
    graphs fp16 - validated, the tokenizer and the engine's model.json; returns {role: file}. `progress` is a
    converters.Progress."""
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fp32-") as scratch:
        progress.step("exporting vision, embedding and decoder graphs", 3)
        exported = export(Path(scratch), progress.advance)
        progress.step(f"writing {quant} graphs", len(exported))
        for role, path in exported.items():
            # int4 makes the decoder int4 and the other graphs fp16
            precision = "fp16" if quant == "int4" and role != "decoder" else quant
            written = write_graph(path, folder / path.name, precision, int4)
            check(written[0])
            files[role] = written[0]
            if len(written) > 1:
                files[f"{role}_data"] = written[1]
            progress.advance()
    files["tokenizer"] = Path(shutil.copy(tokenizer, folder / "tokenizer.json"))
    files["config"] = folder / "model.json"
    files["config"].write_text(json.dumps(engine_config, indent=2), encoding="utf-8")
    return files


def write_graph(exported: Path, destination: Path, precision: str, int4: Int4Options) -> list[Path]:
    """An exported fp32 graph (weights in its data file) at `precision` (one of ONNX_QUANTS) in `destination`;
    returns the files written. Weights are read from the exported file one at a time, so a graph over 2 GB
    never has to be in memory whole."""
    import onnx

    if precision == "int4":
        return save(int4_from_file(exported, int4), destination)
    model = onnx.load_model(str(exported), load_external_data=False)
    if precision == "fp32" and not any(t.data_type == BFLOAT16 for t in _tensors(model.graph)):
        shutil.move(data_file(exported), data_file(destination))  # same name: the graph's references hold
    else:
        model = retyped_from_file(model, data_file(exported), data_file(destination), precision)
    return save_with_data(model, destination)


def save_with_data(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save a graph whose weights are already in data_file(path): left there when large, else put inline."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    data = data_file(path)
    if data.stat().st_size >= EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path))
        return [path, data]
    load_external_data_for_model(model, str(path.parent))
    data.unlink()
    return save(model, path)


def data_file(graph: Path) -> Path:
    """Where a graph keeps its weights when they are outside it."""
    return graph.with_name(graph.name + ".data")


def int4_from_file(path: Path, options: Int4Options) -> onnx.ModelProto:
    """`to_int4` of the graph at `path`, reading its weights from disk one at a time: ONNX Runtime's quantizer
    reads each weight through onnx_ir (memory-mapped), so only the quantized graph is ever in memory. Weights
    stored as bf16 (onnx_export.fill_weights) are quantized from their float32 values and those left unquantized
    (norms, biases) widened, so the graph computes in float32 as if exported so."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    model = onnx.load_model(str(path), load_external_data=False)
    external = [tensor for tensor in _tensors(model.graph) if uses_external_data(tensor)]
    # onnx_ir resolves a location against the working folder: point it at the file itself
    for tensor in external:
        _set_location(tensor, str(path.parent.absolute() / _location(tensor)))
    with _bfloat16_read_as_float():
        model = to_int4(model, options, output_projection=OUTPUT_PROJECTION)
    for tensor in _tensors(model.graph):
        if uses_external_data(tensor):  # what was not quantized: norms, biases
            _set_location(tensor, Path(_location(tensor)).name)
    load_external_data_for_model(model, str(path.parent))
    _widen_bfloat16(model)
    return model


@contextlib.contextmanager
def _bfloat16_read_as_float() -> Iterator[None]:
    """ONNX Runtime's quantizer reads each weight with onnx_ir.from_proto; a bf16 weight would get bf16 scales
    (rounded, and not the float32 the activations are). Hand it the weight widened to float32 instead."""
    import onnx_ir

    reading = onnx_ir.from_proto

    def widened(proto):
        value = reading(proto)
        if getattr(proto, "data_type", None) != BFLOAT16:
            return value
        return onnx_ir.Tensor(value.numpy().astype(np.float32), name=value.name)

    onnx_ir.from_proto = widened
    try:
        yield
    finally:
        onnx_ir.from_proto = reading


def _widen_bfloat16(model: onnx.ModelProto) -> None:
    """The graph's bf16 tensors (loaded, not external) as float32."""
    from onnx import numpy_helper

    for tensor in _tensors(model.graph):
        if tensor.data_type == BFLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))


def retyped_from_file(model: onnx.ModelProto, source: Path, target: Path, precision: str,
                      chunk: int = 1 << 24) -> onnx.ModelProto:
    """The graph `model` (its weights in `source`) at `precision` ("fp16" or "fp32"), its weights written to
    `target`, one weight and `chunk` values at a time. fp16: the converter retypes the weights it cannot see
    (they are still in the file); then each weight is converted from the type it is stored in (float32, or bf16
    as onnx_export.fill_weights stores a bf16 checkpoint's) to the type the graph now gives it. Returns the
    graph, referring to `target`."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    stored = {}
    for tensor in _tensors(model.graph):
        if uses_external_data(tensor):
            stored[tensor.name] = tensor.data_type
            if tensor.data_type == BFLOAT16:
                tensor.data_type = onnx.TensorProto.FLOAT  # what it is in the graph's arithmetic
    if precision == "fp16":
        with _value_info_from_dims():
            model = to_fp16(model)
    with target.open("wb") as out:
        for tensor in _tensors(model.graph):
            if uses_external_data(tensor):
                begin = out.tell()
                _convert_weight(tensor, stored[tensor.name], source, out, chunk)
                set_external(tensor, target.name, begin, out.tell() - begin)
    return model


def _convert_weight(tensor: onnx.TensorProto, stored_type: int, source: Path, out, chunk: int) -> None:
    """Copy one external weight from `source` to `out`, `chunk` values at a time, converted from `stored_type`
    to the tensor's type."""
    from onnx.helper import tensor_dtype_to_np_dtype
    from onnxruntime.transformers.float16 import convert_np_to_float16

    entries = {entry.key: entry.value for entry in tensor.external_data}
    offset, length = int(entries.get("offset", 0)), int(entries["length"])
    same = stored_type == tensor.data_type
    source_type = np.dtype(np.uint8 if same else tensor_dtype_to_np_dtype(stored_type))
    step = source_type.itemsize * chunk
    for start in range(0, length, step):
        values = np.fromfile(source, dtype=source_type, count=min(step, length - start) // source_type.itemsize,
                             offset=offset + start)
        if not same:
            values = values.astype(np.float32)
            values = convert_np_to_float16(values) if tensor.data_type == FLOAT16 else values
        values.tofile(out)


@contextlib.contextmanager
def _value_info_from_dims() -> Iterator[None]:
    """The fp16 converter reads each converted weight's data only to learn its shape; with the weights still in
    their file (and still fp32 there), take the shape from the tensor's dims instead."""
    from onnx import helper
    from onnxruntime.transformers import float16

    reading = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda tensor: helper.make_tensor_value_info(
        tensor.name, tensor.data_type, list(tensor.dims))
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = reading


def set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Point `tensor` at `length` bytes from `offset` in the data file `location` (a name beside the graph)."""
    import onnx

    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        tensor.external_data.add(key=key, value=str(value))


def _location(tensor: onnx.TensorProto) -> str:
    return next(entry.value for entry in tensor.external_data if entry.key == "location")


def _set_location(tensor: onnx.TensorProto, location: str) -> None:
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location


def save(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write a graph; returns the files written (the graph, and its weights file when large)."""
    import onnx

    # decided by the weights' bytes: model.ByteSize() itself fails on a graph over 2 GB
    if tensor_bytes(model) < EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path))
        return [path]
    data = data_file(path)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return [path, data]


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the graph's weights (initializers and constants, subgraphs included), counted tensor by tensor
    (one tensor stays under protobuf's limit; the whole graph may not)."""
    return sum(len(tensor.raw_data) or tensor.ByteSize() for tensor in _tensors(model.graph))


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic; inputs and outputs stay fp32 so the engine is the same for every variant."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = OnnxModel(convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True))
    converted.topological_sort()  # the converter appends its input casts at the end of the node list
    return converted.model


def to_int4(model: onnx.ModelProto, options: Int4Options, output_projection: str) -> onnx.ModelProto:
    """Every weight MatMul to 4 bits except the output projection, which gets 8 bits - as llama.cpp's Q4_K_M
    keeps its output tensor at higher precision: its errors go straight into the logits."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    settings = dict(block_size=options.block_size, is_symmetric=options.symmetric,
                    accuracy_level=options.accuracy_level)
    body = MatMulNBitsQuantizer(model, bits=4, nodes_to_exclude=[output_projection], **settings)
    body.process()
    head = MatMulNBitsQuantizer(body.model.model, bits=8, nodes_to_include=[output_projection], **settings)
    head.process()
    return head.model.model


def check(path: Path) -> None:
    """onnx's structural checker (by path, so graphs with external data work)."""
    import onnx

    onnx.checker.check_model(str(path))
