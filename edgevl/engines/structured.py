"""Constrained decoding: every token of the answer is one that keeps it valid against the request's JSON schema.

Both runtimes use llguidance's token masks (`TokenMask`) on the logits of the next token: the ONNX engine on
the logits of its own decoding loop, the llama.cpp engine on llama.cpp's logits buffer, in place, before its
own samplers pick the token - so the request's sampling settings apply unchanged, under the schema. llguidance
compiles the schema lazily against the tokenizer's token trie and computes a mask in tens of microseconds; of
the three maintained mask libraries it covers the most of JSON Schema and needs neither torch nor transformers
(xgrammar depends on torch; outlines-core compiles a whole-vocabulary automaton up front). One mechanism for
both runtimes also means one set of schemas both accept (llama.cpp's own grammar converter skips `minimum`,
`multipleOf`... and filters all 152k candidates whenever it rejects a token).

JSON comes out on one line with ", " and ": " separators, as `json.dumps` writes it: no room for a model to
spend its token budget on whitespace. An unusable schema raises `SchemaError` before anything is generated.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from edgevl.errors import BackendUnavailable, SchemaError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

#: llguidance's JSON options: compact, like json.dumps, so that whitespace cannot run on.
_LLGUIDANCE_JSON: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
#: Each byte of a token bitmask as the 8 logit offsets it stands for: 0 where the token is allowed, -inf where
#: not. A lookup and an add cost a fraction of a millisecond at a 152k vocabulary, several times less than
#: unpacking the bits and writing -inf where they are 0.
_BYTE_TO_OFFSETS = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little") == 1, 0, -np.inf,
).astype(np.float32)


def _llguidance():
    try:
        import llguidance
    except ImportError as error:
        raise BackendUnavailable(f"JSON output needs llguidance ({error}): pip install llguidance") from None
    return llguidance


def llguidance_tokenizer(tokenizer_json: str, vocab_size: int, eos_token: int):
    """llguidance's view of a tokenizers tokenizer (built once per model: it indexes every token)."""
    return _llguidance().LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_token)


def llguidance_tokenizer_from_llama_vocab(vocab) -> Any:
    """llguidance's view of a llama.cpp model's vocabulary (built once per model, about a second at 152k
    tokens): llguidance's own helper reads every token's bytes and attributes through llama-cpp-python."""
    _llguidance()
    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():  # it calls llama_token_get_attr, deprecated in llama-cpp-python: per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(vocab)


class TokenMask:
    """The tokens allowed next under a JSON schema, as a mask applied to float32 logits in place."""

    def __init__(self, tokenizer, schema: dict[str, Any]) -> None:
        llguidance = _llguidance()
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_LLGUIDANCE_JSON)
        except Exception as error:  # llguidance raises ValueError / TypeError for schemas it cannot read
            raise SchemaError(f"the JSON schema cannot be compiled: {error}") from None
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._check()
        words = (tokenizer.vocab_size + 31) // 32
        self._bits = np.zeros(4 * words, dtype=np.uint8)  # one bit per token, as llguidance writes it
        self._offsets = np.empty((4 * words, 8), dtype=np.float32)

    def apply(self, logits: np.ndarray) -> None:
        """Set the logits of every token the schema does not allow next to -inf."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._check()
        np.take(_BYTE_TO_OFFSETS, self._bits, axis=0, out=self._offsets)
        np.add(logits, self._offsets.reshape(-1)[:len(logits)], out=logits)

    def accept(self, token: int) -> None:
        self._matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise SchemaError(f"the JSON schema cannot be used: {self._matcher.get_error()}")
