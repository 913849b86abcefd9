"""JSON schemas narrowed for random weights, for tests and benchmarks of constrained decoding.

A trained model closes its strings, lists and numbers; random weights happily write one string (or digits, or
list items) until the token limit, which proves nothing about the constraint. These narrow a schema so that
every value is short; anything valid under the narrowed schema is valid under the original.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

_DATA_KEYWORDS = ("enum", "const")


def short_values(schema: Any) -> Any:
    """At most 16 characters per free string, 3 items per list, 8 characters per pattern repetition."""
    def narrow(node: dict, kinds: list) -> dict:
        if "string" in kinds and not {"pattern", "enum", "const", "maxLength"} & node.keys():
            node["maxLength"] = 16
        if "pattern" in node:  # "one or more" of a class, e.g. business_card's e-mail pattern
            node["pattern"] = node["pattern"].replace("]+", "]{1,8}")
        if "array" in kinds and "maxItems" not in node:
            node["maxItems"] = 3
        return node

    return _narrowed(schema, narrow)


def short_numbers(schema: Any) -> Any:
    """Numbers within ±999 with at most two decimals (llguidance caps no digits by itself)."""
    def narrow(node: dict, kinds: list) -> dict:
        if "integer" in kinds or "number" in kinds:
            node = {"minimum": -999, "maximum": 999, **node}
        if "number" in kinds:
            node.setdefault("multipleOf", 0.01)
        return node

    return _narrowed(schema, narrow)


def _narrowed(schema: Any, narrow: Callable[[dict, list], dict]) -> Any:
    if isinstance(schema, list):
        return [_narrowed(item, narrow) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: value if key in _DATA_KEYWORDS else _narrowed(value, narrow) for key, value in schema.items()}
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return narrow(node, kinds)
