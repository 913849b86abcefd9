"""Tables: one data class, parsers for what models write, and exports for what users paste.

Models answer a table request in Markdown (what we ask for), sometimes in HTML (what the classic engine and
some fine-tunes produce), and occasionally as whitespace-aligned text. `parse_tables` accepts all three and
always returns rectangular `Table`s, so every export can rely on rows having as many cells as the header.

Merged HTML cells (colspan/rowspan) are expanded by *repeating* the cell's text in every grid position it
covers, not by leaving the extra positions blank: each row then stands on its own, which is what filtering
in a spreadsheet or reading the JSON records needs (a rowspan'd "Fruit" category stays on every fruit row).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

from edgevl.errors import EdgevlError

#: Export formats understood by `Table.to`.
FORMATS = ("md", "csv", "json", "html", "tsv")

#: Spans larger than this are garbage (or an attack): they would allocate huge grids.
MAX_SPAN = 1000


@dataclass
class Table:
    """A rectangular table: `header` names the columns and every row has exactly `len(header)` cells."""

    header: list[str]
    rows: list[list[str]]

    @classmethod
    def from_rows(cls, rows: list[list[str]]) -> Table:
        """Build a table whose first row is the header, repairing ragged rows.

        Short rows are padded with empty cells; if some row is longer than the header, the header is extended
        with "column N" names (N counts from 1) so no cell is lost. Rows and columns without any text (a
        trailing "| |", a phantom row or column a table recogniser invented) are dropped.
        """
        rows = [row for row in rows if any(cell.strip() for cell in row)]
        if not rows:
            return cls(header=[], rows=[])
        width = max(len(row) for row in rows)
        grid = [row + [""] * (width - len(row)) for row in rows]
        grid[0] = rows[0] + [f"column {index + 1}" for index in range(len(rows[0]), width)]
        kept = [column for column in range(width) if any(row[column].strip() for row in grid)]
        grid = [[row[column] for column in kept] for row in grid]
        return cls(header=grid[0], rows=grid[1:])

    @classmethod
    def from_records(cls, records: list[dict[str, str]]) -> Table:
        """Build a table from JSON records (one object per row): the columns are every key, in order of first
        appearance; a row without a key gets an empty cell."""
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            raise EdgevlError("a table in JSON must be a list of objects, one per row")
        header = list(dict.fromkeys(key for record in records for key in record))
        return cls(header=header, rows=[[_cell(record.get(key)) for key in header] for record in records])

    def unique_header(self) -> list[str]:
        """Header names usable as keys: blanks become "column N", repeats get " (2)", " (3)", ..."""
        names: list[str] = []
        for index, name in enumerate(self.header):
            base = name.strip() or f"column {index + 1}"
            unique, copy = base, 2
            while unique in names:
                unique, copy = f"{base} ({copy})", copy + 1
            names.append(unique)
        return names

    def records(self) -> list[dict[str, str]]:
        """Rows as dictionaries keyed by `unique_header()`."""
        keys = self.unique_header()
        return [dict(zip(keys, row)) for row in self.rows]

    def to(self, fmt: str) -> str:
        """Export as "md", "csv", "json", "html" or "tsv"."""
        exporters = {"md": to_markdown, "csv": to_csv, "json": to_json, "html": to_html, "tsv": to_tsv}
        if fmt not in exporters:
            raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return exporters[fmt](self)


def _cell(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------- exports


def to_markdown(table: Table) -> str:
    """A pipe table with columns padded to line up in a monospaced font (CJK characters count double).

    Pipes in cells are escaped as `\\|` and line breaks become `<br>`, the usual Markdown conventions.
    """

    def escape(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")

    lines = [[escape(cell) for cell in row] for row in [table.header, *table.rows]]
    widths = [max([3, *(_display_width(line[column]) for line in lines)]) for column in range(len(table.header))]

    def format_row(cells: list[str]) -> str:
        padded = (cell + " " * (width - _display_width(cell)) for cell, width in zip(cells, widths))
        return "| " + " | ".join(padded) + " |"

    separator = "| " + " | ".join("-" * width for width in widths) + " |"
    return "\n".join([format_row(lines[0]), separator, *(format_row(line) for line in lines[1:])])


def to_csv(table: Table) -> str:
    """RFC 4180 quoting (commas, quotes and line breaks inside cells survive), "\\n" between records.

    Like every export, the text has no final line break: whoever writes it to a file or terminal adds one.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([table.header, *table.rows])
    return buffer.getvalue().removesuffix("\n")


def to_json(table: Table) -> str:
    """A list of records keyed by the (made unique) header names."""
    return json.dumps(table.records(), ensure_ascii=False, indent=2)


def to_html(table: Table) -> str:
    """A plain `<table>` with a `<thead>`; text is escaped and line breaks become `<br>`."""

    def cells(row: list[str], tag: str) -> str:
        return "".join(f"<{tag}>{html.escape(cell).replace(chr(10), '<br>')}</{tag}>" for cell in row)

    head = f"<thead><tr>{cells(table.header, 'th')}</tr></thead>"
    body = [f"<tr>{cells(row, 'td')}</tr>" for row in table.rows]
    return "\n".join(["<table>", head, "<tbody>", *body, "</tbody>", "</table>"])


def to_tsv(table: Table) -> str:
    """Tab-separated lines, the format spreadsheets accept on paste.

    TSV has no quoting, so tabs and line breaks inside a cell become spaces.
    """

    def flatten(cell: str) -> str:
        return re.sub(r"[\t\r\n]+", " ", cell)

    return "\n".join("\t".join(flatten(cell) for cell in row) for row in [table.header, *table.rows])


def _display_width(text: str) -> int:
    """Columns the text takes in a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


# ---------------------------------------------------------------------------------------------------- parsing


def parse_tables(text: str) -> list[Table]:
    """All tables in a model's answer, in order: HTML if there is any, else Markdown, else aligned text.

    Returns an empty list when the text holds nothing table-like.
    """
    if re.search(r"<table\b", text, re.IGNORECASE):
        tables = parse_html_tables(text)
    else:
        tables = parse_markdown_tables(text) or parse_aligned_text(text)
    return [table for table in tables if table.header]


def parse_markdown_tables(text: str) -> list[Table]:
    """Pipe tables, with or without outer pipes, alignment rows and `\\|` escapes, amid any other text.

    A table is a run of at least two consecutive lines that contain an unescaped pipe; anything else (prose,
    code fences, blank lines) separates tables. The first row is taken as the header.
    """
    tables = []
    for block in _pipe_line_blocks(text.splitlines()):
        rows = [_split_pipe_row(line) for line in block]
        rows = [row for row in rows if not _is_alignment_row(row)]
        tables.append(Table.from_rows(rows))
    return tables


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def _pipe_line_blocks(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in lines:
        if _UNESCAPED_PIPE.search(line):
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if len(block) >= 2]


def _split_pipe_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [_clean_markdown_cell(cell) for cell in _UNESCAPED_PIPE.split(line)]


def _clean_markdown_cell(cell: str) -> str:
    """Unescape pipes, turn `<br>` back into line breaks and drop bold markers wrapping the whole cell."""
    cell = cell.strip().replace("\\|", "|")
    cell = re.sub(r"<br\s*/?>", "\n", cell, flags=re.IGNORECASE)
    bold = re.fullmatch(r"(\*\*|__)(.+)\1", cell, flags=re.DOTALL)
    return bold.group(2).strip() if bold else cell


def _is_alignment_row(row: list[str]) -> bool:
    return all(re.fullmatch(r":?-+:?", cell.replace(" ", "")) for cell in row)


def parse_aligned_text(text: str) -> list[Table]:
    """Last resort: lines whose cells are separated by tabs or runs of two or more spaces.

    Only lines that split into at least two cells count, and at least two such lines are needed, so prose
    never becomes a table.
    """
    rows = [re.split(r"\t+| {2,}", line.strip()) for line in text.splitlines()]
    rows = [row for row in rows if len(row) >= 2]
    return [Table.from_rows(rows)] if len(rows) >= 2 else []


def parse_html_tables(text: str) -> list[Table]:
    """Every top-level `<table>`; merged cells are expanded by repeating their text (see the module docstring).

    Tags inside cells are dropped (their text kept, `<br>` kept as a line break), entities are unescaped and
    runs of whitespace collapse to one space, as a browser would show them. A table nested inside a cell
    contributes its text to that cell.
    """
    parser = _HtmlTableParser()
    parser.feed(text)
    parser.close()
    return [Table.from_rows(_expand_spans(rows)) for rows in parser.tables]


@dataclass
class _HtmlCell:
    text: str
    colspan: int = 1
    rowspan: int = 1


class _HtmlTableParser(HTMLParser):
    """Collects the rows of each top-level table as `_HtmlCell`s, before spans are expanded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[_HtmlCell]]] = []
        self._depth = 0  # how many <table> elements we are inside
        self._cell: _HtmlCell | None = None
        self._cell_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self.tables.append([])
        elif tag == "br":
            if self._cell is not None:
                self._cell_text.append("\n")
        elif self._depth == 1 and tag == "tr":
            self._finish_cell()
            self.tables[-1].append([])
        elif self._depth == 1 and tag in ("td", "th"):
            self._finish_cell()
            spans = {name: _span(value) for name, value in attrs if name in ("colspan", "rowspan")}
            self._cell = _HtmlCell(text="", **spans)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            if self._depth == 1:
                self._finish_cell()
            self._depth = max(0, self._depth - 1)
        elif self._depth == 1 and tag in ("td", "th", "tr"):
            self._finish_cell()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell_text.append(re.sub(r"\s+", " ", data))

    def _finish_cell(self) -> None:
        if self._cell is None:
            return
        text = "".join(self._cell_text)
        self._cell.text = "\n".join(part.strip() for part in text.split("\n")).strip()
        if not self.tables[-1]:  # a cell before any <tr>: sloppy HTML, give it a row
            self.tables[-1].append([])
        self.tables[-1][-1].append(self._cell)
        self._cell, self._cell_text = None, []


def _span(value: str | None) -> int:
    try:
        return min(MAX_SPAN, max(1, int(value or 1)))
    except ValueError:
        return 1


def _expand_spans(rows: list[list[_HtmlCell]]) -> list[list[str]]:
    """Lay cells out on a grid; a cell spanning several positions puts its text in each of them."""
    grid: dict[tuple[int, int], str] = {}
    for row_index, cells in enumerate(rows):
        column = 0
        for cell in cells:
            while (row_index, column) in grid:  # skip positions taken by rowspans from above
                column += 1
            for down in range(min(cell.rowspan, len(rows) - row_index)):  # no rows invented below the table
                for across in range(cell.colspan):
                    grid[(row_index + down, column + across)] = cell.text
            column += cell.colspan
    height = max((row for row, _ in grid), default=-1) + 1
    width = max((column for _, column in grid), default=-1) + 1
    return [[grid.get((row, column), "") for column in range(width)] for row in range(height)]
