"""The embedded engine on synthetic screenshots: real RapidOCR / SLANet-plus models, no network, a few seconds."""

from __future__ import annotations

import difflib
import socket
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from edgevl.drawing import dejavu_font, default_font, render_table, render_text

from edgevl.engines import classic
from edgevl.engines.classic import ClassicOcrEngine, RuledGrid, TextBox, group_into_lines, join_line
from edgevl.errors import BackendUnavailable, UnsupportedTask
from edgevl.tasks import Table, get_task

LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoice 2024-117: total $1,234.56 due Friday.",
    "Contact support@example.com or call (555) 0199.",
    "Meeting notes - Q3 planning, room 4B",
]
CELLS = [["Name", "Qty", "Price"], ["Apple", "3", "1.20"], ["Banana", "12", "0.50"]]
SALES = [  # wider, with empty cells and punctuation
    ["ID", "Product", "Region", "Units", "Revenue"],
    ["1", "Widget", "North", "120", "$1,440.00"],
    ["2", "Gadget", "", "75", "$2,250.50"],
    ["3", "Doohickey", "South", "8", ""],
]
# SLANet-plus read the headers of these as one spanning cell ("Item Qty Price" above an invented empty row,
# "Name City" | "Score") or added a spanning empty row above them.
ITEMS = [["Item", "Qty", "Price"], ["Apple", "3", "1.20"], ["Pear", "10", "0.80"]]
SCORES = [["Name", "City", "Score"], ["Alice", "Paris", "91"], ["Bob", "Berlin", "78"]]
PAYMENTS = [["ID", "Date", "Amount", "Status"], ["1", "Mon", "5", "ok"], ["2", "Tue", "7", "no"]]


@pytest.fixture(scope="module")
def engine() -> ClassicOcrEngine:
    with ClassicOcrEngine(threads=2) as shared:
        yield shared


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (a model download) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def run(engine: ClassicOcrEngine, task: str, *images: Image.Image) -> str:
    return "".join(engine.stream(get_task(task).build_request(images, engine.family)))


def similarity(expected: str, got: str) -> float:
    return difflib.SequenceMatcher(None, expected, got).ratio()


# ---------------------------------------------------------------------------------------------- OCR


def test_reads_rendered_text_with_its_lines(engine: ClassicOcrEngine) -> None:
    got = run(engine, "ocr", render_text(LINES, default_font(24)))
    assert similarity("\n".join(LINES), got) >= 0.98, got
    assert len(got.splitlines()) == len(LINES)


def test_reads_dejavu_text(engine: ClassicOcrEngine) -> None:
    font = dejavu_font(22)
    if font is None:
        pytest.skip("DejaVu Sans is not installed (Debian: fonts-dejavu-core)")
    got = run(engine, "ocr", render_text(LINES, font))
    assert similarity("\n".join(LINES), got) >= 0.98, got


def test_streams_line_by_line_and_counts_lines(engine: ClassicOcrEngine) -> None:
    pieces = list(engine.stream(get_task("ocr").build_request([render_text(LINES[:3])], "classic")))
    assert len(pieces) == 3 and pieces[1].startswith("\n")
    assert engine.last_stats.generated_tokens == 3 and engine.last_stats.decode_ms > 0


def test_several_images_are_separated_by_a_blank_line(engine: ClassicOcrEngine) -> None:
    blank = Image.new("RGB", (200, 100), "white")
    got = run(engine, "ocr", render_text(LINES[:2]), blank, render_text(LINES[2:3]))
    assert similarity("\n".join(LINES[:2]) + "\n\n" + LINES[2], got) >= 0.98, got


@pytest.mark.parametrize("size", [(1, 1), (5, 300), (640, 480)])
def test_blank_image_gives_empty_text(engine: ClassicOcrEngine, size: tuple[int, int]) -> None:
    assert run(engine, "ocr", Image.new("RGB", size, "white")) == ""


def test_words_of_a_line_are_ordered_left_to_right_and_lines_top_to_bottom() -> None:
    boxes = [
        TextBox("world", 120, 52, 200, 80),  # second line, slightly lower than "Hello"
        TextBox("below", 10, 100, 80, 128),
        TextBox("Hello", 10, 50, 100, 78),
        TextBox("Title", 10, 0, 90, 30),
    ]
    lines = group_into_lines(boxes)
    assert [[box.text for box in line] for line in lines] == [["Title"], ["Hello", "world"], ["below"]]


def test_join_line_puts_no_space_between_cjk_characters() -> None:
    assert join_line(["Hello", "world"]) == "Hello world"
    assert join_line(["你好", "世界", "OK", "東京"]) == "你好世界 OK 東京"
    assert join_line(["日本語の", "テキスト。", "한국어", "텍스트"]) == "日本語のテキスト。 한국어 텍스트"


# ---------------------------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    "cells", [CELLS, SALES, ITEMS, SCORES, PAYMENTS], ids=["3x3", "sales", "items", "scores", "payments"]
)
def test_ruled_table_gives_its_cells(engine: ClassicOcrEngine, cells: list[list[str]]) -> None:
    html = run(engine, "table", render_table(cells))
    assert html.startswith("<table>") and html.endswith("</table>")
    # One row per table row and no spanning cell: nothing that parsing would have to drop or repeat.
    assert html.count("<tr>") == len(cells) and "span" not in html, html
    table = get_task("table").parse(html).primary
    assert table is not None and [table.header, *table.rows] == cells


def test_text_run_across_a_ruling_is_cut_at_it(engine: ClassicOcrEngine) -> None:
    image = render_table(ITEMS, padding=3)
    texts = [box.text for box in engine._find_text(classic._to_bgr(image))]
    assert "Apple3" in texts, f"the detector no longer joins cells here, the test needs a tighter table: {texts}"
    table = get_task("table").parse(run(engine, "table", image)).primary
    assert table is not None and [table.header, *table.rows] == ITEMS


def test_merged_cell_of_a_ruled_table_spans_its_columns(engine: ClassicOcrEngine) -> None:
    cells = [["Region", "2023", "", "2024", ""], ["", "H1", "H2", "H1", "H2"], ["North", "1", "2", "3", "4"]]
    image = _merge_header_cells(render_table(cells), columns=[2, 4])
    html = run(engine, "table", image)
    assert '<td colspan="2">2023</td><td colspan="2">2024</td>' in html, html
    table = get_task("table").parse(html).primary
    assert table is not None and table.header == ["Region", "2023", "2023", "2024", "2024"]


def test_dejavu_table(engine: ClassicOcrEngine) -> None:
    font = dejavu_font(14)
    if font is None:
        pytest.skip("DejaVu Sans is not installed (Debian: fonts-dejavu-core)")
    table = get_task("table").parse(run(engine, "table", render_table(SALES, font))).primary
    assert table is not None and [table.header, *table.rows] == SALES


def test_cell_text_is_escaped_in_the_html(engine: ClassicOcrEngine) -> None:
    html = run(engine, "table", render_table([["Tag", "Op"], ["<b>", "a&b"]]))
    assert "&lt;b&gt;" in html and "a&amp;b" in html
    assert get_task("table").parse(html).primary == Table(["Tag", "Op"], [["<b>", "a&b"]])


def test_a_table_amid_empty_page_is_cut_out_before_slanet_reads_it(engine: ClassicOcrEngine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    font = default_font(20)
    page = Image.new("RGB", (1400, 1000), "white")
    draw = ImageDraw.Draw(page)
    for row, cells in enumerate(SALES):  # no rulings: SLANet gives the structure
        for left, text in zip((420, 480, 640, 780, 880), cells):
            draw.text((left, 400 + row * 40), text, fill="black", font=font)
    seen = []
    structurer = engine._table_model()
    monkeypatch.setattr(engine, "_table_model", lambda: lambda image: seen.append(image.shape) or structurer(image))
    table = get_task("table").parse(run(engine, "table", page)).primary
    height, width = seen[0][:2]
    assert height < 250 and width < 650, seen  # the table's text and half a line around it, not the page
    assert table is not None and [table.header, *table.rows] == SALES


def test_text_without_table_gives_one_row_per_line(engine: ClassicOcrEngine) -> None:
    table = get_task("table").parse(run(engine, "table", render_text(LINES[:3]))).primary
    assert table is not None and [table.header, *table.rows] == [[line] for line in LINES[:3]]


def test_blank_table_image_gives_an_empty_table(engine: ClassicOcrEngine) -> None:
    assert run(engine, "table", Image.new("RGB", (300, 200), "white")) == "<table></table>"


def test_rows_and_columns_slanet_left_empty_are_dropped_unless_cells_span() -> None:
    row = ["<tr>", "<td></td>", "<td></td>", "<td></td>", "</tr>"]
    structure = ["<thead>", *row, "</thead>", "<tbody>", *row, *row, "</tbody>"]
    texts = ["", "Month", "Int", "", "May", "5", "", "", ""]  # an empty first column and an empty last row
    tokens, kept = classic._without_empty_lines(structure, texts)
    assert classic._structure_html(tokens, kept) == (
        "<table><thead><tr><td>Month</td><td>Int</td></tr></thead><tbody><tr><td>May</td><td>5</td></tr></tbody></table>")
    spanning = ["<tbody>", "<tr>", "<td", ' colspan="2"', ">", "</td>", "</tr>", *row, "</tbody>"]
    assert classic._without_empty_lines(spanning, ["Title", "", "a", ""]) == (spanning, ["Title", "", "a", ""])


def test_ink_the_detector_found_is_no_missed_character() -> None:
    image = np.full((40, 100, 3), 255, np.uint8)
    image[10:30, 5:60] = 0  # text the detector boxed
    image[10:30, 80:90] = 0  # a lone character it missed
    blanked = classic._without_boxes(image, [TextBox("Sept", 4, 9, 61, 31)])
    assert (blanked[:, :70] == 255).all() and (blanked[10:30, 80:90] == 0).all()
    assert classic._ink_crop(blanked, [0, 0, 70, 40]) is None
    assert classic._ink_crop(blanked, [70, 0, 100, 40]) is not None


# ---------------------------------------------------------------------------------------------- ruled grids


def grid_image(row_rulings: tuple[int, ...], column_rulings: tuple[int, ...] = (10, 110, 210)) -> np.ndarray:
    """A white image with full-length black rulings at the given y and x positions."""
    image = Image.new("RGB", (220, 220), "white")
    draw = ImageDraw.Draw(image)
    for y in row_rulings:
        draw.line([(column_rulings[0], y), (column_rulings[-1], y)], fill="black", width=2)
    for x in column_rulings:
        draw.line([(x, row_rulings[0]), (x, row_rulings[-1])], fill="black", width=2)
    return classic._to_bgr(image)


def word(text: str, left: float, top: float, char_width: float = 10, height: float = 20) -> TextBox:
    """A text box with a box for each non-space character, `char_width` apart."""
    chars = tuple(
        TextBox(char, left + index * char_width, top, left + (index + 1) * char_width, top + height)
        for index, char in enumerate(text)
        if not char.isspace()
    )
    return TextBox(text, left, top, left + len(text) * char_width, top + height, chars)


def test_ruled_grid_cuts_text_at_the_cell_borders() -> None:
    boxes = [word("Qty Price", 70, 25), word("Apple3", 60, 75), word("x", 20, 125), word("y", 130, 125)]
    grid = RuledGrid.find(grid_image((10, 60, 110, 160)), boxes)
    assert grid is not None and len(grid.cells) == 6
    assert grid.cell_texts(boxes) == ["Qty", "Price", "Apple", "3", "x", "y"]


def test_ruled_grid_leaves_rows_without_rulings_to_slanet() -> None:
    boxes = [word(text, left, top) for top in (25, 75, 125) for text, left in (("a", 20), ("b", 130))]
    grid = RuledGrid.find(grid_image((10, 60, 160)), boxes)  # no ruling between the rows at y=75 and y=125
    assert grid is not None and len(grid.cells) == 4
    assert grid.cell_texts(boxes) is None


def test_ruled_grid_leaves_text_beside_it_to_slanet() -> None:
    boxes = [word("a", 20, 25), word("b", 130, 25), word("c", 20, 75), word("d", 130, 75)]
    image = grid_image((10, 60, 110))
    assert RuledGrid.find(image, boxes).cell_texts(boxes) == ["a", "b", "c", "d"]
    caption = word("Table 1", 20, 180)
    assert RuledGrid.find(image, [*boxes, caption]).cell_texts([*boxes, caption]) is None


def test_image_without_a_complete_grid_has_no_ruled_grid() -> None:
    boxes = [word("a", 20, 25)]
    assert RuledGrid.find(grid_image((10, 60, 110), column_rulings=(10, 210)), boxes) is None  # one column
    assert RuledGrid.find(classic._to_bgr(Image.new("RGB", (220, 220), "white")), boxes) is None


# ---------------------------------------------------------------------------------------------- errors, offline


@pytest.mark.parametrize(("task", "doing"), [("caption", "captioning"), ("ask", "answering questions")])
def test_caption_and_ask_explain_how_to_get_a_vlm(engine: ClassicOcrEngine, task: str, doing: str) -> None:
    options = {"question": "Why?"} if task == "ask" else {}
    request = get_task(task).build_request([Image.new("RGB", (8, 8))], "classic", **options)
    with pytest.raises(UnsupportedTask) as raised:
        engine.stream(request)  # raises at once, before anything is consumed
    message = str(raised.value)
    assert "text and tables only" in message and doing in message
    assert "edgevl convert" in message and "--to gguf" in message and "--model" in message


def test_works_without_network_with_fresh_models(no_network: None) -> None:
    with ClassicOcrEngine(threads=2) as fresh:
        assert "RapidOCR 3.10.0" in fresh.description and "SLANet-plus" in fresh.description
        assert similarity(LINES[0], run(fresh, "ocr", render_text(LINES[:1]))) >= 0.98
        assert run(fresh, "table", render_table(CELLS)).count("<td>") == 9


def test_close_frees_the_models_and_the_engine_reloads_on_use() -> None:
    engine = ClassicOcrEngine(threads=1)
    assert run(engine, "ocr", render_text(["Reload me"])) == "Reload me"
    engine.close()
    assert engine._reader is None and engine._table_structurer is None
    engine.close()  # twice is fine
    assert run(engine, "ocr", render_text(["Reload me"])) == "Reload me"


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # makes `import rapidocr` fail
    with pytest.raises(BackendUnavailable, match='pip install "rapidocr==3.10.0" "rapid-table==0.3.0"'):
        run(ClassicOcrEngine(), "ocr", render_text(["x"]))


def test_missing_model_file_is_never_downloaded(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    monkeypatch.setitem(classic.OCR_MODEL_FILES, "Det", "PP-OCRv9_det_huge.onnx")
    with pytest.raises(BackendUnavailable, match="PP-OCRv9_det_huge.onnx is missing"):
        run(ClassicOcrEngine(), "ocr", render_text(["x"]))


def _merge_header_cells(image: Image.Image, columns: list[int]) -> Image.Image:
    """`render_table`'s image with the header's rulings left of `columns` painted over: merged header cells."""
    dark = np.asarray(image.convert("L")) < 128
    xs, ys = (set(np.flatnonzero(dark.mean(axis=axis) > 0.5)) for axis in (0, 1))  # the rulings' pixels
    lefts, tops = sorted(x for x in xs if x - 1 not in xs), sorted(y for y in ys if y - 1 not in ys)
    merged = image.copy()
    grey = merged.getpixel((lefts[0] + 4, tops[0] + 4))
    for column in columns:
        ImageDraw.Draw(merged).rectangle([lefts[column] - 1, tops[0] + 3, lefts[column] + 3, tops[1] - 1], fill=grey)
    return merged
