"""The embedded engine on synthetic screenshots: real RapidOCR / SLANet-plus models, no network, a few seconds."""

from __future__ import annotations

import difflib
import socket
import sys

import pytest
from PIL import Image
from rendering import dejavu_font, default_font, render_table, render_text

from edgevl.engines import classic
from edgevl.engines.base import Request
from edgevl.engines.classic import ClassicOcrEngine, TextBox, group_into_lines, join_line
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


@pytest.mark.parametrize("cells", [CELLS, SALES], ids=["3x3", "sales"])
def test_ruled_table_gives_its_cells(engine: ClassicOcrEngine, cells: list[list[str]]) -> None:
    html = run(engine, "table", render_table(cells))
    assert html.startswith("<table>") and html.endswith("</table>")
    table = get_task("table").parse(html).primary
    assert table is not None and [table.header, *table.rows] == cells


def test_dejavu_table(engine: ClassicOcrEngine) -> None:
    font = dejavu_font(14)
    if font is None:
        pytest.skip("DejaVu Sans is not installed (Debian: fonts-dejavu-core)")
    table = get_task("table").parse(run(engine, "table", render_table(SALES, font))).primary
    assert table is not None and [table.header, *table.rows] == SALES


def test_cell_text_is_escaped_in_the_html(engine: ClassicOcrEngine) -> None:
    html = run(engine, "table", render_table([["Tag", "Op"], ["<b>", "a&b"]]))
    assert "&lt;b&gt;" in html and "a&amp;b" in html
    # SLANet invents an empty first row and third column for this small table; parsing drops them.
    assert get_task("table").parse(html).primary == Table(["Tag", "Op"], [["<b>", "a&b"]])


def test_text_without_table_gives_one_row_per_line(engine: ClassicOcrEngine) -> None:
    table = get_task("table").parse(run(engine, "table", render_text(LINES[:3]))).primary
    assert table is not None and [table.header, *table.rows] == [[line] for line in LINES[:3]]


def test_blank_table_image_gives_an_empty_table(engine: ClassicOcrEngine) -> None:
    assert run(engine, "table", Image.new("RGB", (300, 200), "white")) == "<table></table>"


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
