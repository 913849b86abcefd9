"""Property-based tests (hypothesis): whatever bytes or JSON arrive, the request parser, the manifest loader, the
safetensors header reader and the GGUF and ONNX header checks answer with their own clear error - never another
exception, never a hang."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_server import SETTINGS, EchoEngine  # noqa: E402

from edgevl.converters.checkpoint import Checkpoint  # noqa: E402
from edgevl.errors import CheckpointError, ModelError  # noqa: E402
from edgevl.manifest import MANIFEST_NAME, read_manifest  # noqa: E402
from edgevl.model_files import check_gguf, check_onnx  # noqa: E402
from edgevl.server import ApiError, ChatRequest, parse_chat_request, parse_chat_request_bytes  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
#: text and image parts, some right and some wrong, in messages that are mostly well-formed
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30) | json_values}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.one_of(
        st.just("data:image/png;base64,iVBORw0KGgo="), st.text(max_size=30).map(lambda t: "data:" + t),
        st.binary(max_size=40).map(lambda b: "data:image/png;base64," + __import__("base64").b64encode(b).decode()),
        st.text(max_size=30))}) | json_values}),
    json_values,
)
messages = st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values,
    "content": st.text(max_size=30) | st.lists(parts, max_size=3) | json_values,
}), max_size=3)
requests = st.fixed_dictionaries({"messages": messages}, optional={
    name: json_values | st.integers(-10, 10**6) | st.floats(allow_nan=True)
    for name in ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stream", "stop", "n",
                 "edgevl_task", "stream_options")
})
SERVER_SETTINGS = replace(SETTINGS, max_images=2, max_image_pixels=10_000)


@FUZZ
@given(body=requests | json_values)
def test_request_parser_answers_every_body_with_a_checked_request_or_a_4xx(body):
    try:
        parsed = parse_chat_request(body, EchoEngine(), SERVER_SETTINGS)
    except ApiError as error:
        assert 400 <= error.status < 500 and error.message
        return
    assert isinstance(parsed, ChatRequest) and len(parsed.images) <= SERVER_SETTINGS.max_images


@FUZZ
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_request_parser_answers_every_byte_string(body):
    try:
        parse_chat_request_bytes(body, EchoEngine(), SERVER_SETTINGS)
    except ApiError as error:
        assert 400 <= error.status < 500


GOOD_MANIFEST = {"format": "gguf", "family": "qwen2vl", "quant": "f32",
                 "files": {"text": {"name": "m.gguf", "bytes": 10, "sha256": "0" * 64}}}


@FUZZ
@given(data=json_values | st.fixed_dictionaries({}, optional={
    **{name: json_values for name in GOOD_MANIFEST},
    "files": st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=12) | json_values, "bytes": json_values, "sha256": json_values}) | json_values,
        max_size=3),
    "version": json_values, "card": json_values, "source": json_values}))
def test_manifest_loader_answers_every_json_with_a_manifest_or_a_model_error(tmp_path, data):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    try:
        manifest = read_manifest(tmp_path)
    except ModelError as error:
        assert "\n" not in str(error)
        return
    for entry in manifest.files.values():  # what it accepts stays inside the folder
        assert Path(entry.name).name == entry.name and ".." != entry.name and "/" not in entry.name


@FUZZ
@given(header=json_values | st.dictionaries(st.text(max_size=6), st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64"]) | json_values,
    "shape": st.lists(st.integers(-2, 2**33), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-8, 2**33), max_size=3) | json_values}) | json_values, max_size=3),
    data=st.binary(max_size=64))
def test_safetensors_header_reader_answers_every_header(tmp_path, header, data):
    (tmp_path / "config.json").write_text('{"architectures": ["X"]}')
    text = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    try:
        checkpoint = Checkpoint(tmp_path)
    except CheckpointError as error:
        assert "\n" not in str(error)
        return
    size = (tmp_path / "model.safetensors").stat().st_size
    for tensor in checkpoint.tensors.values():  # what it accepts lies inside the file
        assert 0 <= tensor.offset and tensor.offset + tensor.nbytes <= size


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    from test_model_files import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("fuzz") / "tiny.gguf").read_bytes()


def mutated(original: bytes):
    """The file with some bytes overwritten (often in a count or a length), cut short, or both."""
    return st.tuples(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), max_size=6),
                     st.integers(0, len(original))).map(lambda edits: _apply(original, *edits))


def _apply(original: bytes, changes: list[tuple[int, int]], length: int) -> bytes:
    data = bytearray(original)
    for where, value in changes:
        data[where] = value
    return bytes(data[:length])


@FUZZ
@given(data=st.data())
def test_gguf_check_answers_every_mutation(tmp_path, gguf_bytes, data):
    pytest.importorskip("gguf")
    content = data.draw(mutated(gguf_bytes) | st.binary(max_size=100).map(lambda b: b"GGUF" + b))
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(content)
    try:
        check_gguf(path)
    except ModelError as error:
        assert "\n" not in str(error)
        return
    import gguf

    gguf.GGUFReader(path)  # what the check accepts, gguf's own reader reads


@FUZZ
@given(data=st.data())
def test_onnx_check_answers_every_mutation(tmp_path, data):
    from test_model_files import onnx_model

    original = onnx_model()
    path = tmp_path / "fuzzed.onnx"
    path.write_bytes(data.draw(mutated(original) | st.binary(max_size=100)))
    try:
        check_onnx(path)
    except ModelError as error:
        assert "\n" not in str(error)
