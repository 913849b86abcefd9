"""Extraction: fields of a receipt, an invoice, a form or a card as JSON that is valid against a JSON schema.

    edgevl extract receipt.png --schema receipt --model qwen2-vl-2b-q4
    edgevl extract form.png --fields total,date,vendor --model qwen2-vl-2b-q4

The schema travels in the request (`Request.json_schema`); engines that generate tokens constrain decoding to it
(llguidance token masks on the next token's logits, in both runtimes), so the answer parses and validates by
construction, not by retries. Constraints keep the form; the prompt keeps the meaning, so it also states the
schema in words: a JSON template of the fields, as the models' own key-information examples show it, and a
line per field with its type and description.

Built-in schemas are data files in `edgevl/tasks/schemas/` (`edgevl extract --list`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from edgevl.errors import EdgevlError
from edgevl.families import wording
from edgevl.tasks.base import Task

Schema = dict[str, Any]
SchemaSpec = Schema | str | Path

#: The words around the schema for models whose family has none of its own (edgevl.families: MiniCPM-V has).
#: `{document}` is the schema's title ("receipt"), `{template}` a JSON skeleton of the answer, `{fields}` one
#: line per field. Qwen2-VL's key-information examples give the JSON skeleton with empty values and ask for
#: JSON format.
DEFAULT_PROMPT = (
    "Extract the key information of the {document} in the image, in JSON format:\n{template}\n"
    "The fields:\n{fields}\n"
    "Copy text exactly as written. Use null for a field that is not in the image. Output only the JSON."
)

#: Words for JSON types in the field list.
_TYPE_WORDS = {"string": "text", "number": "number", "integer": "whole number", "boolean": "true or false",
               "object": "object", "array": "list", "null": "null"}


def builtin_schemas() -> dict[str, Schema]:
    """The schemas shipped with edgevl, by name (file name without .json)."""
    folder = resources.files("edgevl.tasks") / "schemas"
    return {entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
            for entry in sorted(folder.iterdir(), key=lambda entry: entry.name) if entry.name.endswith(".json")}


def load_schema(spec: SchemaSpec) -> Schema:
    """A schema given as a dict, a built-in name ("receipt") or a path to a JSON file."""
    if not isinstance(spec, (str, Path)):
        return _checked(spec, "the schema")
    builtins = builtin_schemas()
    if isinstance(spec, str) and spec in builtins:
        return builtins[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EdgevlError(f"schema {str(spec)!r}: no such file, and not a built-in schema "
                          f"({', '.join(builtins)}; see `edgevl extract --list`)")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EdgevlError(f"{path}: not a JSON file ({error})") from None
    return _checked(schema, str(path))


def fields_schema(fields: str | list[str]) -> Schema:
    """The schema of `--fields total,date,vendor`: an object with those keys, each a string or null."""
    names = [name.strip() for name in (fields.split(",") if isinstance(fields, str) else fields) if name.strip()]
    if not names:
        raise EdgevlError("--fields needs at least one field name, e.g. --fields total,date,vendor")
    if len(set(names)) != len(names):
        raise EdgevlError(f"--fields names a field twice: {', '.join(names)}")
    return {"type": "object", "properties": {name: {"type": ["string", "null"]} for name in names},
            "required": names, "additionalProperties": False}


def resolve_schema(schema: SchemaSpec | None = None, fields: str | list[str] | None = None) -> Schema:
    """The schema from exactly one of `schema` (dict, built-in name or file) and `fields` (names)."""
    if (schema is None) == (fields is None):
        raise EdgevlError("extract needs either a schema (--schema receipt, or a JSON schema file) or "
                          "--fields name,name,...; see `edgevl extract --list` for the built-in schemas")
    return load_schema(schema) if schema is not None else fields_schema(fields)  # type: ignore[arg-type]


def _checked(schema: Any, where: str) -> Schema:
    if not isinstance(schema, dict) or not schema:
        raise EdgevlError(f"{where}: a JSON schema must be a non-empty JSON object, like "
                          '{"type": "object", "properties": {...}}')
    return schema


# ---- the schema in words --------------------------------------------------------------------------------------

def json_template(schema: Schema) -> Any:
    """A skeleton of a valid answer: objects with their keys, lists with one item, "" / 0 / null for values."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        schema = next((option for option in options if _types(option) != ["null"]), options[0])
    if "enum" in schema:
        return next((value for value in schema["enum"] if value is not None), None)
    types = [kind for kind in _types(schema) if kind != "null"] or ["null"]
    kind = types[0]
    if kind == "object":
        properties = schema.get("properties") or {}
        if not properties and isinstance(schema.get("additionalProperties"), dict):
            return {"...": json_template(schema["additionalProperties"])}
        return {name: json_template(value) for name, value in properties.items()}
    if kind == "array":
        return [json_template(schema["items"])] if isinstance(schema.get("items"), dict) else []
    return {"string": "", "number": 0, "integer": 0, "boolean": False}.get(kind)


def field_lines(schema: Schema, indent: str = "- ") -> list[str]:
    """One line per field (nested fields indented): name, type in words, description."""
    if "array" in _types(schema) and isinstance(schema.get("items"), dict):
        return field_lines(schema["items"], indent)
    lines = []
    for name, value in (schema.get("properties") or {}).items():
        lines.append(f"{indent}{name} ({describe_type(value)})" + (f": {value['description']}"
                                                                  if value.get("description") else ""))
        lines += field_lines(value, "  " + indent)
    if not schema.get("properties") and isinstance(schema.get("additionalProperties"), dict):
        lines.append(f"{indent}one key per column header, each with its cell's "
                     f"{describe_type(schema['additionalProperties'])}")
    return lines


def describe_type(schema: Schema) -> str:
    """"text or null", "one of cash, card", "text like ^[0-9]{4}-...$", "list of objects"."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return " or ".join(dict.fromkeys(describe_type(option) for option in options))
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(value) for value in schema["enum"])
    words = []
    for kind in _types(schema):
        word = _TYPE_WORDS.get(kind, kind)
        if kind == "array" and isinstance(schema.get("items"), dict):
            word = f"list of {describe_type(schema['items'])}"
        if kind == "string" and "pattern" in schema:
            word = f"text matching {schema['pattern']}"
        words.append(word)
    return " or ".join(words) or "any value"


def _types(schema: Schema) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(item) for item in kind]
    if kind is None and "properties" in schema:
        return ["object"]
    return [str(kind)] if kind else []


def extraction_prompt(family: str, schema: Schema) -> str:
    """The family's extraction wording filled in for `schema`."""
    document = str(schema.get("title") or "document").lower()
    return wording(family, "extract", DEFAULT_PROMPT).format(
        document=document,
        template=json.dumps(json_template(schema), ensure_ascii=False),
        fields="\n".join(field_lines(schema)) or "- (any fields the schema allows)",
    )


# ---- the task -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractResult:
    """The extracted fields (`data`: what the JSON answer holds) and the answer as the model wrote it."""

    data: Any
    raw: str
    formats: ClassVar[tuple[str, ...]] = ("json",)

    @property
    def text(self) -> str:
        return json.dumps(self.data, ensure_ascii=False)

    def render(self, fmt: str = "json") -> str:
        if fmt == "json":
            return json.dumps(self.data, ensure_ascii=False, indent=2)
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(self.formats)}")


class ExtractTask(Task):
    name = "extract"

    def prompt(self, family: str, schema: SchemaSpec | None = None, fields: str | list[str] | None = None) -> str:
        return extraction_prompt(family, resolve_schema(schema, fields))

    def max_tokens(self, schema: SchemaSpec | None = None, fields: str | list[str] | None = None) -> int:
        return 2048  # an invoice of 40 lines at 40-50 tokens each

    def json_schema(self, schema: SchemaSpec | None = None, fields: str | list[str] | None = None,
                    **options: Any) -> Schema:
        return resolve_schema(schema, fields)

    def parse(self, text: str) -> ExtractResult:
        return ExtractResult(parse_json_answer(text), text)


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON value of an answer. Constrained engines write bare JSON; servers that ignore the schema may wrap
    it in a ```json fence, which is taken off. An answer that is not JSON (cut off by the token limit) is an
    error that shows its end."""
    fenced = _FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except ValueError as error:
        end = text.strip()[-60:]
        raise EdgevlError(f"the answer is not complete JSON ({error}); it ends with {end!r} - if it was cut off, "
                          "raise --max-tokens") from None
