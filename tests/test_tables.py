"""Parsing tables out of model answers, and exporting them in every format."""

from __future__ import annotations

import csv
import io
import json

import pytest

from edgevl.tasks.tables import Table, parse_tables

FRUIT = Table(header=["Name", "Qty", "Price"], rows=[["Apple", "3", "1.20"], ["Banana", "12", "0.50"]])


# ---------------------------------------------------------------------------------------------- Markdown


@pytest.mark.parametrize(
    "answer",
    [
        "| Name | Qty | Price |\n|---|---:|:-:|\n| Apple | 3 | 1.20 |\n| Banana | 12 | 0.50 |",
        "Name | Qty | Price\n--- | --- | ---\nApple | 3 | 1.20\nBanana | 12 | 0.50",
        "|Name|Qty|Price|\n|Apple|3|1.20|\n|Banana|12|0.50|",  # no alignment row
        "Here is the table:\n\n```markdown\n| Name | Qty | Price |\n| :--- | --- | --- |\n| Apple | 3 | 1.20 |\n"
        "| Banana | 12 | 0.50 |\n```\n\nLet me know if you need anything else.",
        "| **Name** | **Qty** | **Price** |\n| --- | --- | --- |\n| Apple | 3 | 1.20 |\n| Banana | 12 | 0.50 |",
    ],
    ids=["outer-pipes", "no-outer-pipes", "no-alignment-row", "fenced-with-prose", "bold-header"],
)
def test_markdown_variants_give_the_same_table(answer: str) -> None:
    assert parse_tables(answer) == [FRUIT]


def test_markdown_escaped_pipes_and_line_breaks_stay_in_their_cell() -> None:
    (table,) = parse_tables("| Expr | Meaning |\n|---|---|\n| a \\| b | a or b<br>(bitwise) |")
    assert table.rows == [["a | b", "a or b\n(bitwise)"]]


def test_ragged_rows_are_padded_and_long_rows_extend_the_header() -> None:
    (table,) = parse_tables("| A | B |\n|---|---|\n| 1 |\n| 1 | 2 | 3 | 4 |")
    assert table.header == ["A", "B", "column 3", "column 4"]
    assert table.rows == [["1", "", "", ""], ["1", "2", "3", "4"]]


def test_empty_rows_and_columns_are_dropped() -> None:
    (table,) = parse_tables("| A | | B | |\n|---|---|---|---|\n| | | | |\n| 1 | | 2 | |")
    assert table == Table(["A", "B"], [["1", "2"]])


def test_multiple_tables_are_all_kept_in_order() -> None:
    answer = "First:\n| A | B |\n|---|---|\n| 1 | 2 |\n\nSecond:\n| C |\n|---|\n| 3 |"
    assert parse_tables(answer) == [Table(["A", "B"], [["1", "2"]]), Table(["C"], [["3"]])]


@pytest.mark.parametrize("answer", ["", "   \n", "I cannot see a table here.", "a | b", "```\n```", "|||\n|||"])
def test_garbage_gives_no_table(answer: str) -> None:
    assert parse_tables(answer) == []


def test_whitespace_aligned_text_is_the_last_resort() -> None:
    answer = "Inventory\nName     Qty   Price\nApple    3     1.20\nBanana\t12\t0.50"
    assert parse_tables(answer) == [FRUIT]


# ---------------------------------------------------------------------------------------------- HTML


def test_html_with_thead_tbody_nested_tags_and_entities() -> None:
    answer = """Sure, here it is:
    <table border="1"><thead><tr><th><b>Name</b></th><th>Note</th></tr></thead>
    <tbody><tr><td>Fish &amp; Chips</td><td><span>hot</span><br/>  and   crispy</td></tr>
    <tr><td>&lt;tag&gt;</td><td>&#x263A;</td></tr></tbody></table>"""
    (table,) = parse_tables(answer)
    assert table == Table(["Name", "Note"], [["Fish & Chips", "hot\nand crispy"], ["<tag>", "\u263a"]])


def test_html_spans_repeat_the_cell_text() -> None:
    answer = (
        "<table><tr><th>Kind</th><th colspan='2'>Item</th></tr>"
        "<tr><td rowspan=2>Fruit</td><td>Apple</td><td>red</td></tr>"
        "<tr><td>Pear</td><td>green</td></tr>"
        "<tr><td>Veg</td><td colspan=2 rowspan=5>Leek</td></tr></table>"
    )
    (table,) = parse_tables(answer)
    assert table.header == ["Kind", "Item", "Item"]
    assert table.rows == [["Fruit", "Apple", "red"], ["Fruit", "Pear", "green"], ["Veg", "Leek", "Leek"]]


def test_html_ragged_rows_absurd_spans_and_several_tables() -> None:
    answer = (
        "<table><tr><td>A</td><td>B</td></tr><tr><td colspan='x'>1</td></tr></table>"
        "<p>between</p><table><tr><td colspan=99999999>wide</td></tr><tr><td>2</td></tr></table>"
    )
    first, second = parse_tables(answer)
    assert first == Table(["A", "B"], [["1", ""]])
    assert len(second.header) == 1000 and second.rows[0][0] == "2"


def test_html_nested_table_becomes_text_of_its_cell() -> None:
    (table,) = parse_tables("<table><tr><td>outer</td><td><table><tr><td>in</td></tr></table></td></tr></table>")
    assert table == Table(["outer", "in"], [])


def test_html_without_rows_gives_no_table() -> None:
    assert parse_tables("<table></table>") == []


# ---------------------------------------------------------------------------------------------- exports

TRICKY = Table(
    header=["Name", "Name", "", "Note"],
    rows=[["Doe, Jane", 'say "hi"', "a|b", "line one\nline two"], ["Lee", "", "", "tab\there"]],
)


def test_csv_round_trips_commas_quotes_and_line_breaks() -> None:
    assert list(csv.reader(io.StringIO(TRICKY.to("csv")))) == [TRICKY.header, *TRICKY.rows]


def test_json_records_have_unique_keys() -> None:
    records = json.loads(TRICKY.to("json"))
    assert list(records[0]) == ["Name", "Name (2)", "column 3", "Note"]
    assert records[1] == {"Name": "Lee", "Name (2)": "", "column 3": "", "Note": "tab\there"}


def test_unique_header_does_not_collide_with_existing_names() -> None:
    assert Table(["A", "A (2)", "A", ""], []).unique_header() == ["A", "A (2)", "A (3)", "column 4"]


def test_markdown_export_escapes_aligns_and_parses_back() -> None:
    text = Table(["名前", "Note"], [["東京", "a|b\nc"]]).to("md")
    assert text.splitlines() == ["| 名前 | Note      |", "| ---- | --------- |", "| 東京 | a\\|b<br>c |"]
    assert parse_tables(TRICKY.to("md")) == [TRICKY]


def test_html_export_escapes_and_parses_back() -> None:
    text = Table(["<b>", "x"], [["Fish & Chips", "1\n2"]]).to("html")
    assert "&lt;b&gt;" in text and "Fish &amp; Chips" in text and "1<br>2" in text
    assert parse_tables(text) == [Table(["<b>", "x"], [["Fish & Chips", "1\n2"]])]


def test_tsv_is_one_line_per_row_with_tabs_only_between_cells() -> None:
    lines = TRICKY.to("tsv").split("\n")
    assert lines == ["Name\tName\t\tNote", 'Doe, Jane\tsay "hi"\ta|b\tline one line two', "Lee\t\t\ttab here"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("md", "| Name |\n| ---- |"),
        ("csv", "Name"),
        ("json", "[]"),
        ("html", "<table>\n<thead><tr><th>Name</th></tr></thead>\n<tbody>\n</tbody>\n</table>"),
        ("tsv", "Name"),
    ],
)
def test_a_table_without_body_rows_exports_its_header(fmt: str, expected: str) -> None:
    assert Table(["Name"], []).to(fmt) == expected


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="md, csv, json, html, tsv"):
        FRUIT.to("xlsx")
