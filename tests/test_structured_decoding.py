"""Constrained decoding with the tiny random models: whatever nonsense random weights want to say, every answer
parses and validates against its schema - on llama.cpp (Qwen2-VL and MiniCPM-V), on ONNX Runtime, through
`edgevl serve` and the `openai` client, and in `edgevl batch` and `edgevl extract`."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import pytest
from conftest import noise_image

from edgevl.api import run_task
from edgevl.errors import SchemaError
from edgevl.tasks import get_task
from edgevl.tasks.extract import builtin_schemas, fields_schema
from edgevl.testing.schemas import short_numbers, short_values

jsonschema = pytest.importorskip("jsonschema")

#: One schema per kind of constraint. Strings and lists are bounded: random weights would otherwise write one
#: string (or list) until the token limit, where a real model closes it.
SCHEMAS = {
    "nested objects": {
        "type": "object",
        "properties": {
            "vendor": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                        "city": {"type": ["string", "null"], "maxLength": 12}},
                       "required": ["name", "city"], "additionalProperties": False},
            "paid": {"type": "boolean"},
        },
        "required": ["vendor", "paid"], "additionalProperties": False,
    },
    "arrays": {
        "type": "object",
        "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "properties": {"name": {"type": "string", "maxLength": 10}, "qty": {"type": "integer"}},
            "required": ["name", "qty"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False,
    },
    "enums": {
        "type": "object",
        "properties": {"payment": {"enum": ["cash", "card", None]},
                       "currency": {"type": "string", "enum": ["EUR", "USD", "CNY"]}},
        "required": ["payment", "currency"], "additionalProperties": False,
    },
    "numbers": {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "total": {"type": "number"}, "tax": {"type": ["number", "null"]}},
        "required": ["count", "total", "tax"], "additionalProperties": False,
    },
    "patterns": {
        "type": "object",
        "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                       "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["date", "code"], "additionalProperties": False,
    },
    "top-level array": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 8}},
}
#: Not JSON Schema either runtime can compile: a reference to nothing.
UNCOMPILABLE = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}
IMAGE = noise_image(84, 56, seed=3)


def answers_validate(engine, schema, temperature: float = 0.0, seed: int = 0) -> object:
    """The answer's data, checked against the schema (sampled with `seed` when `temperature` > 0)."""
    task = get_task("extract")
    request = task.build_request([IMAGE], engine.family, schema=short_numbers(schema), max_tokens=256,
                                 temperature=temperature)
    request = replace(request, sampling=replace(request.sampling, seed=seed))
    data = task.parse("".join(engine.stream(request))).data
    jsonschema.validate(data, schema)
    return data


@pytest.fixture(scope="module")
def gguf_engine(qwen2vl_gguf):
    from edgevl.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(qwen2vl_gguf("q4_k_m", "f16"), threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def onnx_engine(qwen2vl_onnx):
    from edgevl.engines.onnx import OnnxEngine

    with OnnxEngine(qwen2vl_onnx("int4"), threads=1) as engine:
        yield engine


@pytest.fixture(params=["llama.cpp", "onnx"])
def engine(request):
    return request.getfixturevalue("gguf_engine" if request.param == "llama.cpp" else "onnx_engine")


@pytest.mark.slow
@pytest.mark.parametrize("name", SCHEMAS)
def test_every_answer_validates(engine, name):
    answers_validate(engine, SCHEMAS[name])
    for seed in (1, 2):  # sampled, not only greedy: llama.cpp's samplers read the masked logits too
        answers_validate(engine, SCHEMAS[name], temperature=1.0, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["receipt", "invoice_lines", "business_card"])
def test_fields_and_builtin_schemas_validate(engine, name):
    answers_validate(engine, short_values(builtin_schemas()[name]))
    answers_validate(engine, short_values(fields_schema("total,date,vendor")), temperature=1.0, seed=4)


@pytest.mark.slow
def test_an_uncompilable_schema_is_a_clear_error(engine):
    with pytest.raises(SchemaError, match="schema"):
        run_task(engine, "extract", [IMAGE], schema=UNCOMPILABLE, max_tokens=8)
    answers_validate(engine, SCHEMAS["enums"])  # the engine is fine afterwards


@pytest.mark.slow
def test_number_ranges_are_enforced(engine):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 99}},
              "required": ["n"], "additionalProperties": False}
    for seed in (1, 2, 3):
        assert 10 <= answers_validate(engine, schema, temperature=1.0, seed=seed)["n"] <= 99


@pytest.mark.slow
def test_minicpmv_on_llama_cpp_samples_under_the_mask_too(minicpmv_gguf):
    from edgevl.engines.llamacpp_minicpmv import MiniCPMVLlamaCppEngine

    with MiniCPMVLlamaCppEngine(minicpmv_gguf("2.6", "q8_0"), threads=1) as engine:
        for name in ("nested objects", "patterns"):
            answers_validate(engine, SCHEMAS[name])


# ---- the server, the openai client, batch and the CLI ------------------------------------------------------------

def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_response_format_through_the_openai_client(gguf_engine):
    openai = pytest.importorskip("openai")
    from test_server import running_server

    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_uri(IMAGE)}},
                                             {"type": "text", "text": "The fields, as JSON."}]}]
    schema = SCHEMAS["arrays"]
    with running_server(gguf_engine) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="test-model", messages=messages, max_tokens=256,
            response_format={"type": "json_schema", "json_schema": {"name": "items", "schema": schema}})
        jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
        enums = {"type": "json_schema", "json_schema": {"name": "enums", "schema": SCHEMAS["enums"]}}
        streamed = client.chat.completions.create(model="test-model", messages=messages, max_tokens=256,
                                                  response_format=enums, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
        jsonschema.validate(json.loads(text), SCHEMAS["enums"])
        # any object: random weights write one key until the limit, but the answer is held to an object
        anything = client.chat.completions.create(model="test-model", messages=messages, max_tokens=4,
                                                  response_format={"type": "json_object"})
        assert anything.choices[0].message.content.startswith("{")
        with pytest.raises(openai.BadRequestError, match="JSON schema"):
            client.chat.completions.create(
                model="test-model", messages=messages, max_tokens=8,
                response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": UNCOMPILABLE}})


@pytest.mark.slow
def test_remote_engine_gets_valid_json_from_a_served_model(qwen2vl_gguf):
    from edgevl.api import open_engine
    from edgevl.testing.server import edgevl_serve

    with edgevl_serve("--model", str(qwen2vl_gguf("q4_k_m", "f16")), "--threads", "1") as url, \
            open_engine(endpoint=url) as engine:
        answers_validate(engine, SCHEMAS["patterns"])


@pytest.mark.slow
def test_batch_writes_one_json_object_per_image(gguf_engine, tmp_path):
    from edgevl.batch import run_batch

    files = []
    for seed in range(3):
        files.append(tmp_path / f"receipt{seed}.png")
        noise_image(64, 48, seed=seed).save(files[-1])
    schema = SCHEMAS["enums"]
    output = tmp_path / "out.jsonl"
    summary = run_batch(gguf_engine, files, output, "extract", options={"schema": schema, "max_tokens": 64})
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert summary.answered == 3 and summary.failed == 0
    for record in records:
        jsonschema.validate(record["output"], schema)


@pytest.mark.slow
def test_cli_extract_with_a_schema_file(qwen2vl_gguf, tmp_path, capsys):
    from edgevl.cli import main

    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(short_numbers(SCHEMAS["numbers"])))  # random weights write endless digits
    image = tmp_path / "receipt.png"
    IMAGE.save(image)
    model = str(qwen2vl_gguf("q4_k_m", "f16"))
    assert main(["extract", str(image), "--schema", str(schema_file), "--model", model, "--threads", "1"]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), SCHEMAS["numbers"])
