"""Table accuracy: TEDS (tree-edit-distance similarity, Zhong et al. 2020) and its structure-only variant.

The score itself comes from `table-recognition-metric` (RapidAI's packaging of IBM's PubTabNet TEDS, on `apted`).
That implementation expects PubTabNet's HTML: `<html><body><table>` with `<td>` cells only (a `<th>`'s text would be
ignored, a bare `<table>` scores 0). So both tables are first rewritten into one canonical form: rows of `<td>`
cells with their colspan/rowspan and normalised text. Header markup (`<thead>`, `<th>`) is dropped on purpose:
Markdown answers cannot carry it and the embedded engine does not produce it, so only cells, spans and text are
compared. A Markdown (or aligned-text) answer is read with the tasks' own table parser.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import lxml.html
from table_recognition_metric import TEDS

from edgevl.eval.metrics import Normalization
from edgevl.tasks.tables import parse_tables

_TEDS = TEDS(structure_only=False)
_TEDS_STRUCTURE = TEDS(structure_only=True)


@dataclass(frozen=True)
class TableScore:
    teds: float  # 0 (nothing right) to 1 (identical cells, spans and text)
    teds_structure: float  # the same, ignoring cell text


def score_table(reference: str, prediction: str, normalization: Normalization = Normalization()) -> TableScore:
    """Score the first table of `prediction` (HTML or Markdown) against the first table of `reference`."""
    expected, found = canonical_table(reference, normalization), canonical_table(prediction, normalization)
    if expected is None or found is None:
        return TableScore(0.0, 0.0)
    return TableScore(_TEDS(found, expected), _TEDS_STRUCTURE(found, expected))


def canonical_table(text: str, normalization: Normalization = Normalization()) -> str | None:
    """The first table in `text` as `<html><body><table><tr><td>...`, or None when there is no table."""
    rows = _html_rows(text) if "<table" in text.lower() else _markdown_rows(text)
    if not rows:
        return None
    body = "".join(
        "<tr>" + "".join(_cell(normalization.apply(content), spans) for content, spans in row) + "</tr>"
        for row in rows
    )
    return f"<html><body><table>{body}</table></body></html>"


Cell = tuple[str, dict[str, str]]  # text, {"colspan": "2"} when spanning


def _html_rows(text: str) -> list[list[Cell]]:
    tables = lxml.html.fromstring(text).xpath("descendant-or-self::table")
    if not tables:
        return []
    rows = tables[0].xpath("./tr | ./thead/tr | ./tbody/tr | ./tfoot/tr")
    return [[(cell.text_content(), _spans(cell)) for cell in row.xpath("./td | ./th")] for row in rows]


def _spans(cell) -> dict[str, str]:
    spans = {}
    for name in ("colspan", "rowspan"):
        value = cell.get(name, "1").strip()
        if value.isdigit() and int(value) > 1:
            spans[name] = value
    return spans


def _markdown_rows(text: str) -> list[list[Cell]]:
    tables = parse_tables(text)
    if not tables:
        return []
    return [[(cell, {}) for cell in row] for row in [tables[0].header, *tables[0].rows]]


def _cell(content: str, spans: dict[str, str]) -> str:
    attributes = "".join(f' {name}="{value}"' for name, value in spans.items())
    return f"<td{attributes}>{html.escape(content)}</td>"
