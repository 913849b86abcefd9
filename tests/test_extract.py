"""The extract task without a model: schemas (built-in, files, --fields), the prompts that state them in words,
parsing answers, the table task's strict JSON mode, the server's response_format, and extraction scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from edgevl.cli import main
from edgevl.engines.base import Engine
from edgevl.engines.remote import RemoteEngine
from edgevl.errors import EdgevlError, UnsupportedTask
from edgevl.request import Request
from edgevl.server import ServerSettings, parse_chat_request
from edgevl.tasks import ExtractResult, Table, get_task
from edgevl.tasks.extract import builtin_schemas, fields_schema, json_template, load_schema, resolve_schema

IMAGE = Image.new("RGB", (32, 32), "white")
jsonschema = pytest.importorskip("jsonschema")


# ---- schemas ----------------------------------------------------------------------------------------------------

def test_builtin_schemas_are_valid_json_schemas_with_a_description():
    schemas = builtin_schemas()
    assert set(schemas) == {"receipt", "invoice_lines", "business_card", "table_records"}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["description"] and schema["title"]
    assert json_template(schemas["receipt"])["items"] == [{"name": "", "quantity": 0, "price": 0}]
    assert json_template(schemas["table_records"]) == [{"...": ""}]


def test_schema_from_a_name_a_file_or_fields(tmp_path):
    assert load_schema("receipt")["title"] == "Receipt"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    assert load_schema(str(path))["properties"] == {"a": {"type": "string"}}
    assert fields_schema("total, date,vendor")["required"] == ["total", "date", "vendor"]
    jsonschema.validate({"total": "12.50", "date": None, "vendor": "Shop"}, fields_schema(["total", "date", "vendor"]))


@pytest.mark.parametrize("schema, fields, message", [
    (None, None, "either a schema"),
    ("receipt", "total", "either a schema"),
    ("no-such-schema", None, "no such file, and not a built-in schema"),
    (None, " , ", "at least one field"),
    (None, "a,a", "names a field twice"),
    ([1, 2], None, "must be a non-empty JSON object"),
])
def test_bad_schema_choices_are_clear_errors(schema, fields, message):
    with pytest.raises(EdgevlError, match=message):
        resolve_schema(schema, fields)


def test_broken_schema_files_are_clear_errors(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(EdgevlError, match="not a JSON file"):
        load_schema(tmp_path / "broken.json")
    with pytest.raises(EdgevlError, match="must be a non-empty JSON object"):
        load_schema(tmp_path / "list.json")


# ---- requests and answers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2vl", "minicpmv", "some-future-family"])
def test_the_prompt_states_the_schema_in_words_and_the_request_carries_it(family):
    request = get_task("extract").build_request([IMAGE], family, schema="receipt")
    assert request.json_schema == builtin_schemas()["receipt"] and request.task == "extract"
    for words in ("receipt", '"vendor": ""', "- date (text matching ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ or null)",
                  "  - price (number or null): the line's amount", 'payment (one of "cash", "card"'):
        assert words in request.prompt
    assert request.sampling.max_tokens == 2048 and request.sampling.temperature == 0


def test_prompts_are_worded_per_family():
    task = get_task("extract")
    assert task.prompt("qwen2vl", fields="total") != task.prompt("minicpmv", fields="total")
    assert "JSON" in task.prompt("minicpmv", fields="total")
    assert '{"total": ""}' in task.prompt("qwen2vl", fields="total")


def test_other_tasks_carry_no_schema():
    assert get_task("ocr").build_request([IMAGE], "qwen2vl").json_schema is None


def test_answers_parse_into_data_and_broken_ones_say_why():
    task = get_task("extract")
    result = task.parse('{"total": 12.5, "items": [{"name": "Tea"}]}')
    assert isinstance(result, ExtractResult) and result.data["items"][0]["name"] == "Tea"
    assert json.loads(result.render("json")) == result.data and result.text == json.dumps(result.data)
    assert task.parse('```json\n{"a": 1}\n```').data == {"a": 1}  # a server that ignored the schema
    with pytest.raises(EdgevlError, match="not complete JSON.*raise --max-tokens"):
        task.parse('{"total": "12.')


def test_strict_tables_are_constrained_json_records():
    task = get_task("table")
    request = task.build_request([IMAGE], "qwen2vl", strict=True)
    assert request.json_schema == builtin_schemas()["table_records"] and "JSON" in request.prompt
    assert task.build_request([IMAGE], "qwen2vl").json_schema is None
    result = task.parse('[{"Name": "Apple", "Qty": "3"}, {"Name": "Pear", "Price": "2"}]')
    assert result.primary == Table(["Name", "Qty", "Price"], [["Apple", "3", ""], ["Pear", "", "2"]])
    assert result.render("csv").splitlines()[0] == "Name,Qty,Price"


def test_the_embedded_engine_cannot_extract_and_points_to_a_vision_model():
    from edgevl.engines.classic import ClassicOcrEngine

    engine = ClassicOcrEngine()
    with pytest.raises(UnsupportedTask, match="extracting fields as JSON needs a vision-language model"):
        list(engine.stream(get_task("extract").build_request([IMAGE], engine.family, fields="total")))


# ---- the CLI ----------------------------------------------------------------------------------------------------

def test_extract_list_and_errors(capsys, tmp_path):
    assert main(["extract", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in builtin_schemas())
    image = tmp_path / "receipt.png"
    IMAGE.save(image)
    assert main(["extract", str(image)]) == 1
    assert "extract needs either a schema" in capsys.readouterr().err
    assert main(["extract", str(image), "--fields", "total"]) == 1  # the embedded engine
    assert "needs a vision-language model" in capsys.readouterr().err


# ---- the server and the remote engine ---------------------------------------------------------------------------

class _ModelEngine(Engine):
    family = "qwen2vl"

    def stream(self, request: Request):
        yield "{}"


def _chat(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "Fields?"}], **fields}


def test_server_reads_response_format():
    engine, settings = _ModelEngine(), ServerSettings("m")
    schema = {"type": "object", "properties": {"total": {"type": "number"}}}
    parsed = parse_chat_request(_chat(response_format={"type": "json_schema",
                                                       "json_schema": {"name": "x", "schema": schema}}),
                                engine, settings)
    assert parsed.request.json_schema == schema
    assert parse_chat_request(_chat(response_format={"type": "json_object"}), engine, settings).request.json_schema \
        == {"type": "object"}
    assert parse_chat_request(_chat(response_format={"type": "text"}), engine, settings).request.json_schema is None
    assert parse_chat_request(_chat(), engine, settings).request.json_schema is None


@pytest.mark.parametrize("response_format, message", [
    ({"type": "json_schema"}, "json_schema.schema must be a JSON schema object"),
    ({"type": "yaml"}, "response_format must be"),
    ("json", "response_format must be"),
])
def test_server_refuses_bad_response_formats(response_format, message):
    from edgevl.server import ApiError

    with pytest.raises(ApiError, match=message):
        parse_chat_request(_chat(response_format=response_format), _ModelEngine(), ServerSettings("m"))


def test_remote_engine_sends_the_schema_as_response_format():
    engine = RemoteEngine.__new__(RemoteEngine)  # no server needed to build a request body
    engine.model_name, engine.speaks_edgevl = "m", False
    request = get_task("extract").build_request([IMAGE], "qwen2vl", fields="total")
    body = engine.chat_body(request)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "edgevl_answer", "schema": fields_schema("total"), "strict": True}}
    assert "response_format" not in engine.chat_body(get_task("ocr").build_request([IMAGE], "qwen2vl"))


# ---- scoring ----------------------------------------------------------------------------------------------------

def test_fields_are_scored_by_exact_match_and_edit_distance():
    pytest.importorskip("rapidfuzz")
    from edgevl.eval.fields import by_field, score_fields

    expected = {"total": "12.50", "vendor": "Tea House", "items": [{"name": "Tea"}, {"name": "Cake"}]}
    scores = score_fields(expected, json.dumps({"total": "12.50", "vendor": "Tea Hause",
                                                "items": [{"name": "Tea"}]}))
    by_path = {score.path: score for score in scores}
    assert by_path["total"].exact and by_path["items[0].name"].exact
    assert not by_path["vendor"].exact and by_path["vendor"].ned == pytest.approx(1 / 9)
    assert by_path["items[1].name"].ned == 1.0  # missing
    assert by_field([scores])["items[].name"] == (0.5, 0.5)
    assert all(not score.exact for score in score_fields(expected, '{"total": '))  # broken JSON: all wrong


def test_extract_samples_from_a_manifest(tmp_path):
    from edgevl.eval.datasets import load_dataset

    IMAGE.save(tmp_path / "a.png")
    rows = [{"image": "a.png", "json": {"total": "9.99", "date": "2024-01-02"}, "id": "flat"},
            {"image": "a.png", "json": {"items": []}, "schema": "receipt", "id": "named"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(map(json.dumps, rows)))
    flat, named = load_dataset(tmp_path)
    assert flat.task == named.task == "extract" and flat.expected == rows[0]["json"]
    assert flat.schema is None and named.schema == "receipt"
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"image": "a.png", "json": {"items": [{"a": 1}]}}))
    with pytest.raises(EdgevlError, match="needs a \"schema\" unless"):
        load_dataset(tmp_path)


def test_extraction_report_metrics():
    pytest.importorskip("rapidfuzz")
    from edgevl.eval.datasets import Sample
    from edgevl.eval.metrics import Normalization
    from edgevl.eval.report import SCORERS, format_metric

    def sample(expected: dict, index: int) -> Sample:
        return Sample(f"s{index}", Path("unused.png"), "extract", (json.dumps(expected),))

    pairs = [(sample({"total": "1.00", "date": "2024-01-02"}, 0),
              {"status": "ok", "prediction": '{"total": "1.00", "date": "2024-01-02"}', "seconds": 1.0}),
             (sample({"total": "2.00", "date": "2024-01-03"}, 1),
              {"status": "ok", "prediction": '{"total": "2.00", "date": "2024-01-30"}', "seconds": 1.0})]
    result = SCORERS["extract"](pairs, Normalization(), True)
    assert result.metrics["field exact"] == 0.75 and result.metrics["all fields"] == 0.5
    assert result.metrics["date exact"] == 0.5 and result.metrics["total exact"] == 1.0
    assert result.quality == 0.75 and format_metric("date exact", 0.5) == "50.00%"
    assert "date: '2024-01-30' (expected '2024-01-03')" in result.samples[1].detail
