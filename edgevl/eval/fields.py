"""Extraction accuracy: each expected field compared with the predicted one, by exact match and by normalised
edit distance, after the same text normalisation as OCR.

Fields are the leaves of the expected JSON, named by their path (`total`, `items[2].price`); a field the
prediction lacks counts as an empty value (NED 1 unless the expected one is empty too). Numbers and strings are
compared as text, so "12.50" and 12.5 differ only where their digits do: `12.5` vs `12.50` is one insertion.
Fields the prediction has beyond the expected ones are not scored (a schema decides what is extracted).
By-field summaries drop list indices (`items[].price`), so a field is scored over every line it appears on.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

from edgevl.eval.metrics import Normalization

_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class FieldScore:
    path: str
    expected: str
    predicted: str
    exact: bool
    ned: float


def score_fields(expected: Any, prediction: str, normalization: Normalization = Normalization()) -> list[FieldScore]:
    """Scores of every expected field; `prediction` is the model's JSON text ("" or broken JSON: all fields wrong)."""
    try:
        predicted = dict(leaves(json.loads(prediction))) if prediction.strip() else {}
    except ValueError:
        predicted = {}
    scores = []
    for path, value in leaves(expected):
        want, got = normalization.apply(_text(value)), normalization.apply(_text(predicted.get(path)))
        scores.append(FieldScore(path, want, got, want == got, Levenshtein.normalized_distance(want, got)))
    return scores


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every string, number, boolean or null inside `value`."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, f"{path}[{index}]")]
    return [(path, value)]


def by_field(scores: list[list[FieldScore]]) -> dict[str, tuple[float, float]]:
    """Field name (list indices dropped) -> (exact-match rate, mean NED) over all samples."""
    groups: dict[str, list[FieldScore]] = defaultdict(list)
    for sample in scores:
        for score in sample:
            groups[_INDEX.sub("[]", score.path)].append(score)
    return {name: (sum(s.exact for s in group) / len(group), sum(s.ned for s in group) / len(group))
            for name, group in sorted(groups.items())}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
