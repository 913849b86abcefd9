"""Reading order and paragraphs over text boxes (edgevl.layout): pure functions, no model."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevl.errors import EdgevlError
from edgevl.layout import TextBox, arrange, group_into_lines, paragraphs, reading_order
from edgevl.tasks import get_task

CHAR, HEIGHT, PITCH = 10, 20, 26  # px per character, box height, line pitch


def box(text: str, left: float, top: float, char_width: float = CHAR, height: float = HEIGHT) -> TextBox:
    return TextBox(text, left, top, left + len(text) * char_width, top + height)


def column(lines: list[str], left: float, top: float, pitch: float = PITCH) -> list[TextBox]:
    return [box(text, left, top + index * pitch) for index, text in enumerate(lines)]


LEFT = ["The first column starts with a", "sentence that wraps onto the", "next line and ends right here."]
RIGHT = ["The second column is read only", "after the first one, from the", "top of the page to its bottom."]


def test_two_columns_under_a_title_are_read_title_first_then_column_by_column() -> None:
    title = box("A title over both columns", 0, 0, char_width=16, height=30)
    boxes = [title, *column(LEFT, 0, 50), *column(RIGHT, 360, 50)]
    assert arrange(boxes) == [title.text, *LEFT, *RIGHT]
    assert arrange(boxes, "paragraphs") == [title.text, " ".join(LEFT), " ".join(RIGHT)]


def test_columns_are_found_whatever_order_the_detector_gave() -> None:
    boxes = [*column(RIGHT, 360, 0), *column(LEFT, 0, 0)][::-1]
    assert arrange(boxes) == [*LEFT, *RIGHT]


def test_a_section_under_the_columns_is_read_after_both() -> None:
    footer = box("A closing line that spans the whole width of the page", 0, 50 + 3 * PITCH + 20)
    boxes = [*column(LEFT, 0, 50), *column(RIGHT, 360, 50), footer]
    assert arrange(boxes) == [*LEFT, *RIGHT, footer.text]


def test_three_columns() -> None:
    middle = ["A middle column sits between", "the two others and is read in", "its turn, second of the three."]
    boxes = [*column(LEFT, 0, 0), *column(middle, 340, 0), *column(RIGHT, 680, 0)]
    assert arrange(boxes) == [*LEFT, *middle, *RIGHT]


def test_a_sidebar_whose_lines_do_not_line_up_with_the_content_is_its_own_column() -> None:
    sidebar = [box(text, 0, 10 + index * 48) for index, text in enumerate(["Home", "Settings", "About", "Help"])]
    content = column(["Welcome back. Your files are", "synced and nothing needs your", "attention right now, enjoy.",
                      "Last sync: five minutes ago."], 150, 22, pitch=40)
    assert arrange([*content, *sidebar]) == [*(b.text for b in sidebar), *(b.text for b in content)]


def test_aligned_rows_of_items_and_prices_are_read_across() -> None:
    items = ["Coffee", "Bagel with cream cheese", "Orange juice", "Total"]
    prices = ["3.50", "4.25", "2.80", "10.55"]
    boxes = [*column(items, 0, 0), *column(prices, 400, 0)]
    assert arrange(boxes) == [f"{item} {price}" for item, price in zip(items, prices)]


def test_aligned_form_labels_and_values_are_read_across() -> None:
    labels, values = ["Name:", "E-mail:", "Phone:"], ["Ada Lovelace", "ada@example.com", "+44 20 7946 0000"]
    boxes = [*column(labels, 0, 0), *column(values, 120, 0)]
    assert arrange(boxes) == [f"{label} {value}" for label, value in zip(labels, values)]


def test_a_statement_with_several_columns_of_numbers_is_read_row_by_row() -> None:
    # Each side of the gap after the descriptions spans its width on every row, as prose would; but the numbers
    # cover little of it, so the rows are a table's, read across.
    rows = [("01Aug2018 Clearing Cheque", "4987", "36.07", "99,914.15"),
            ("01Aug2018 Clearing Cheque", "4986", "60.93", "99,975.08"),
            ("01Aug2018 Interac e-Transfer", "", "14.54", "101,583.92"),
            ("02Aug2018 Transfer out to loan 7", "", "1,500.00", "70,269.42"),
            ("02Aug2018 Clearing Cheque", "4992", "500.00", "70,888.01")]
    boxes = [box(text, left, index * PITCH) for index, row in enumerate(rows)
             for text, left in zip(row, (0, 540, 650, 820)) if text]
    assert arrange(boxes) == [" ".join(text for text in row if text) for row in rows]


#: The boxes RapidOCR found on an application window drawn by `edgevl eval synth --seed 0` (text, left, top, right,
#: bottom): rows of buttons and toolbar items whose gaps happen to line up over five rows, each side of that gap
#: filling its width about as prose would.
WINDOW = [("Terms of service", 12, 14, 141, 34), ("Print preview", 11, 60, 119, 84), ("Redo", 152, 58, 202, 84),
          ("Keyboard shortcuts", 238, 61, 390, 82), ("Storage used: 12.4 GB of 64 GB", 428, 60, 672, 81),
          ("No results found", 12, 109, 141, 130), ("Zoom out", 11, 157, 92, 179),
          ("Enter your email address", 12, 206, 207, 227), ("Check for updates", 246, 206, 389, 227),
          ("Privacy and security", 427, 206, 585, 227), ("Two-factor authentication", 13, 254, 209, 274),
          ("Message sent", 245, 249, 361, 277), ("OK", 392, 250, 427, 275), ("Archive", 9, 299, 76, 324),
          ("Import", 110, 299, 173, 325), ("3 unread messages", 206, 299, 361, 323),
          ("Version 2.8.1 (build 4410)", 13, 351, 211, 369)]


def test_widget_rows_that_happen_to_leave_a_common_gap_are_read_across() -> None:
    lines = arrange([TextBox(*fields) for fields in WINDOW])
    assert lines == ["Terms of service", "Print preview Redo Keyboard shortcuts Storage used: 12.4 GB of 64 GB",
                     "No results found", "Zoom out", "Enter your email address Check for updates Privacy and security",
                     "Two-factor authentication Message sent OK", "Archive Import 3 unread messages",
                     "Version 2.8.1 (build 4410)"]


def test_a_taller_box_between_two_lines_does_not_glue_them_into_one() -> None:
    # A window beside the text, its lines at other heights: its box overlaps both lines by half a line.
    upper, lower = box("First line", 0, 0), box("Second line", 0, 22)
    beside = box("Beside", 400, 8, height=26)
    lines = group_into_lines([upper, beside, lower])
    assert [[item.text for item in line] for line in lines] == [["First line", "Beside"], ["Second line"]]


def test_two_windows_side_by_side_with_lines_at_other_pitches_are_read_one_after_the_other() -> None:
    # Both hold short items, so neither side is prose, and their rows meet by chance (the geometry of a
    # spreadsheet window beside an editor whose highlighted lines overlap): where a row of the right window is
    # put with one of the left, the other side of some rows holds two lines of its own.
    months = [("January", "1"), ("February", "2"), ("March", "3"), ("April", "4"), ("May", "5"), ("June", "6"),
              ("July", "7"), ("August", "8")]
    left = [box(text, x, index * 30, height=30) for index, row in enumerate(months) for text, x in zip(row, (0, 120))]
    right = [box(text, x, index * 19, height=27) for index, row in enumerate(months)
             for text, x in zip(row, (400, 500))]
    lines = [f"{month} {number}" for month, number in months]
    assert arrange([*left, *right]) == [*lines, *lines]


def test_raw_keeps_the_detectors_order_one_box_per_line() -> None:
    boxes = [*column(RIGHT, 360, 0), *column(LEFT, 0, 0)]
    assert arrange(boxes, "raw") == [b.text for b in boxes]


def test_unknown_layout_is_a_clear_error() -> None:
    with pytest.raises(EdgevlError, match="unknown layout 'columns'; choose one of auto, paragraphs, raw"):
        get_task("ocr").build_request([], "classic", layout="columns")
    assert get_task("ocr").build_request([], "classic").layout == "auto"
    assert get_task("ocr").build_request([], "classic", layout="raw").layout == "raw"


# ---------------------------------------------------------------------------------------------- paragraphs


def lines_of(boxes: list[TextBox]) -> list[list[TextBox]]:
    (block,) = reading_order(boxes)
    return block


def test_wrapped_lines_join_and_a_short_line_ends_the_paragraph() -> None:
    text = ["This paragraph wraps at the", "right edge of its column and", "ends short.",
            "A new paragraph starts after", "the short line above it."]
    assert paragraphs(lines_of(column(text, 0, 0))) == [" ".join(text[:3]), " ".join(text[3:])]


def test_a_gap_of_more_than_a_line_parts_paragraphs() -> None:
    boxes = [*column(LEFT[:2], 0, 0), *column(RIGHT[:2], 0, 2 * PITCH + 30)]
    assert paragraphs(lines_of(boxes)) == [" ".join(LEFT[:2]), " ".join(RIGHT[:2])]


def test_indented_first_line_bullets_and_headings() -> None:
    boxes = [
        box("Heading in a larger font", 0, 0, char_width=15, height=30),
        box("An indented first line of text", 40, 40),
        box("that wraps back to the left and", 0, 40 + PITCH),
        box("finishes here.", 0, 40 + 2 * PITCH),
        box("- a bullet point that is long", 0, 40 + 3 * PITCH),
        box("- another bullet point, also long", 0, 40 + 4 * PITCH),
    ]
    assert paragraphs(lines_of(boxes)) == [
        "Heading in a larger font",
        "An indented first line of text that wraps back to the left and finishes here.",
        "- a bullet point that is long",
        "- another bullet point, also long",
    ]


def test_hyphenated_words_are_joined_and_cjk_gets_no_space() -> None:
    hyphenated = column(["A paragraph with a hyphen-", "ated word at the end of a line."], 0, 0)
    assert paragraphs(lines_of(hyphenated)) == ["A paragraph with a hyphenated word at the end of a line."]
    chinese = column(["这是一段很长的中文文字在这里换行", "然后继续写下去。"], 0, 0)
    chinese = [TextBox(b.text, b.left, b.top, b.left + 20 * len(b.text), b.bottom) for b in chinese]
    assert paragraphs(lines_of(chinese)) == ["这是一段很长的中文文字在这里换行然后继续写下去。"]


def test_a_centred_line_is_not_joined() -> None:
    boxes = [box("Centred title line", 60, 0), *column(LEFT, 0, PITCH)]
    assert paragraphs(lines_of(boxes))[0] == "Centred title line"


# ---------------------------------------------------------------------------------------------- properties

boxes_strategy = st.lists(
    st.builds(box, st.text("abcdefgh", min_size=1, max_size=12), st.integers(0, 800), st.integers(0, 600)),
    max_size=40,
)


@given(boxes_strategy)
@settings(max_examples=150, deadline=None)
def test_every_box_is_read_exactly_once_in_every_mode(boxes: list[TextBox]) -> None:
    for mode in ("auto", "paragraphs", "raw"):  # (no hyphens or CJK here: every word stays a word)
        words = Counter(word for line in arrange(boxes, mode) for word in line.split())
        assert words == Counter(b.text for b in boxes)
