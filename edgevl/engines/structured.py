"""Constrained decoding: every token of the answer is one that keeps it valid against the request's JSON schema.

Each runtime uses the mechanism made for it:

- llama.cpp: its own grammar sampler, given the GBNF grammar that llama-cpp-python's converter writes from the
  schema (`gbnf_grammar`); the llama.cpp engine's `RequestSampler` runs it.
- ONNX Runtime (our own decoding loop, numpy logits): llguidance's token masks (`TokenMask`). llguidance
  compiles the schema lazily against the tokenizer's token trie and computes a mask in tens of microseconds;
  of the three maintained mask libraries it covers the most of JSON Schema and needs neither torch nor
  transformers (xgrammar depends on torch; outlines-core compiles a whole-vocabulary automaton up front).

JSON comes out on one line with ", " and ": " separators, as `json.dumps` writes it: no room for a model to
spend its token budget on whitespace. An unusable schema raises `SchemaError` before anything is generated.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from edgevl.errors import BackendUnavailable, SchemaError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

#: llguidance's JSON options: compact, like json.dumps, so that whitespace cannot run on.
_LLGUIDANCE_JSON: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# ---- llama.cpp ------------------------------------------------------------------------------------------------

#: llama-cpp-python's converter lets a string hold raw control characters (a line break), which JSON forbids
#: and strict parsers refuse; llama.cpp's own converter has since excluded them, as this rule does.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


#: Keywords llama-cpp-python's converter skips without a word; a grammar without them would let answers through
#: that the schema refuses, so such schemas are refused instead.
_NOT_ENFORCED = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties",
                 "maxProperties", "uniqueItems", "not", "if", "patternProperties", "propertyNames", "contains",
                 "dependentRequired", "dependentSchemas")
#: What a pattern's `.` and negated classes must not match inside a JSON string: the converter writes matched
#: characters as they are, and a quote, a backslash or a control character there would end or break the string.
_NOT_IN_JSON_STRING = r'"\\\x00-\x1f'
#: Keywords whose values map names to schemas.
_NAME_MAPS = ("/properties", "/$defs", "/definitions")
#: Keywords whose values are data, not schemas.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "description", "title"})


def gbnf_grammar(schema: dict[str, Any]) -> str:
    """The schema as a llama.cpp GBNF grammar (llama-cpp-python's port of llama.cpp's converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    readable = _for_llama_converter(schema)
    try:
        grammar = json_schema_to_gbnf(json.dumps(readable))
    except Exception as error:  # the converter raises AssertionError, KeyError... for what it cannot do
        raise SchemaError(f"the JSON schema cannot be turned into a llama.cpp grammar: {error}") from None
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)


def _for_llama_converter(schema: Any, where: str = "") -> Any:
    """The schema as llama-cpp-python's converter reads it right: a list of types becomes an anyOf that keeps the
    other keywords (the converter would drop `maxLength` or `pattern` of `"type": ["string", "null"]`). Raises
    SchemaError for keywords it would skip."""
    if isinstance(schema, list):
        return [_for_llama_converter(item, f"{where}/{index}") for index, item in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    if where.endswith(_NAME_MAPS):  # names -> schemas: a property may be called "minimum"
        return {name: _for_llama_converter(value, f"{where}/{name}") for name, value in schema.items()}
    skipped = [keyword for keyword in _NOT_ENFORCED if keyword in schema]
    if skipped:
        raise SchemaError(f"llama.cpp's grammar cannot enforce {', '.join(skipped)} (at {where or '/'}); "
                          "drop it from the schema, or use an ONNX model, whose token masks do")
    converted = {key: value if key in _DATA_KEYWORDS else _for_llama_converter(value, f"{where}/{key}")
                 for key, value in schema.items()}
    if isinstance(converted.get("pattern"), str):
        converted["pattern"] = _json_safe_pattern(converted["pattern"])
    types = converted.get("type")
    if isinstance(types, list):
        rest = {key: value for key, value in converted.items() if key != "type"}
        return {"anyOf": [{**rest, "type": kind} for kind in types]}
    return converted


def _json_safe_pattern(pattern: str) -> str:
    """`pattern` with `.` and `[^...]` kept from matching what a JSON string cannot hold unescaped."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
            out.append(char)
        elif char == "[" and pattern.startswith("[^", index):
            out.append("[^" + _NOT_IN_JSON_STRING)
            in_class, index = True, index + 1
        elif char == "[":
            out.append(char)
            in_class = True
        else:
            out.append("[^" + _NOT_IN_JSON_STRING + "]" if char == "." else char)
        index += 1
    return "".join(out)


# ---- ONNX Runtime (numpy logits) ----------------------------------------------------------------------------

def llguidance_tokenizer(tokenizer_json: str, vocab_size: int, eos_token: int):
    """llguidance's view of a tokenizers tokenizer (built once per model: it indexes every token)."""
    try:
        import llguidance
    except ImportError as error:
        raise BackendUnavailable(f"JSON output on ONNX models needs llguidance ({error}): "
                                 "pip install llguidance") from None
    return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_token)


class TokenMask:
    """The tokens allowed next under a JSON schema, as a mask applied to numpy logits in place."""

    def __init__(self, tokenizer, schema: dict[str, Any]) -> None:
        import llguidance
        import llguidance.numpy

        self._numpy = llguidance.numpy
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_LLGUIDANCE_JSON)
        except Exception as error:  # llguidance raises ValueError / TypeError for schemas it cannot read
            raise SchemaError(f"the JSON schema cannot be compiled: {error}") from None
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._check()
        self._bits = self._numpy.allocate_token_bitmask(1, tokenizer.vocab_size)

    def apply(self, logits: np.ndarray) -> None:
        """Set the logits of every token the schema does not allow next to -inf."""
        self._numpy.fill_next_token_bitmask(self._matcher, self._bits, 0)
        self._check()
        self._numpy.apply_token_bitmask_inplace(logits[None, :], self._bits)

    def accept(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise SchemaError(f"the JSON schema cannot be used: {self._matcher.get_error()}")
