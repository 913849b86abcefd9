"""Table extraction: ask for a Markdown table, accept whatever table-like answer comes back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from edgevl.families import wording
from edgevl.tasks.base import Task
from edgevl.tasks.extract import builtin_schemas, parse_json_answer
from edgevl.tasks.tables import FORMATS, Table, parse_tables

#: The wording for models whose family has none of its own (edgevl.families).
DEFAULT_PROMPT = (
    "Extract the table in the image as a Markdown table. Start with the header row, then the |---| "
    "separator row, then one line per table row. Every row must have the same number of cells; leave a "
    "cell empty if it is empty in the image. Copy the cell text exactly. Output only the table, no commentary."
)

#: `strict`: the answer is constrained to the table-as-records schema (edgevl/tasks/schemas/table_records.json);
#: families word it as their "table_strict" prompt.
DEFAULT_STRICT_PROMPT = (
    "Extract the table in the image in JSON format: a list with one object per table row, in order, each "
    "keyed by the column headers exactly as written, with the cell text as the value. Use \"\" for an empty "
    "cell. Output only the JSON."
)


@dataclass(frozen=True)
class TableResult:
    """The tables found in an answer (the first is the primary one) and the answer itself.

    `render(fmt)` exports every table; text formats separate tables with a blank line. JSON is one document:
    a list of records for a single table, a list of such lists when there are several. With no table, Markdown
    (the format people read) shows the model's answer instead, so "I see no table" is not silently dropped;
    the machine formats stay empty.
    """

    tables: list[Table]
    raw: str
    formats: ClassVar[tuple[str, ...]] = FORMATS

    @property
    def primary(self) -> Table | None:
        return self.tables[0] if self.tables else None

    @property
    def text(self) -> str:
        return self.render("md")

    def render(self, fmt: str = "md") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if fmt == "md" and not self.tables:
            return self.raw.strip()
        if fmt == "json":
            records = [table.records() for table in self.tables]
            return json.dumps(records[0] if len(records) == 1 else records, ensure_ascii=False, indent=2)
        return "\n\n".join(table.to(fmt) for table in self.tables)


class TableTask(Task):
    """Free-form Markdown by default; `strict=True` constrains the answer to JSON records (one object per row)."""

    name = "table"

    def prompt(self, family: str, strict: bool = False) -> str:
        if strict:
            return wording(family, "table_strict", DEFAULT_STRICT_PROMPT)
        return wording(family, self.name, DEFAULT_PROMPT)

    def max_tokens(self, strict: bool = False) -> int:
        return 4096 if strict else 2048  # JSON repeats every header in every row

    def json_schema(self, strict: bool = False, **options: Any) -> dict | None:
        return builtin_schemas()["table_records"] if strict else None

    def parse(self, text: str) -> TableResult:
        if text.lstrip().startswith("["):  # a strict answer: JSON records
            return TableResult(tables=[Table.from_records(parse_json_answer(text))], raw=text)
        return TableResult(tables=parse_tables(text), raw=text)
