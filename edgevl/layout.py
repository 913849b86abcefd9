"""Reading order and paragraphs: pure functions over the text boxes a detector found.

Columns are found the way text-block post-processors such as Umi-OCR's GapTree and Tesseract's column finder do it
(described, not copied): the empty horizontal stretches of each text row are intersected over consecutive rows,
and a stretch that stays empty over several rows, with text on both sides, is a gutter between columns. A title
spanning the columns ends up in a section of its own and is read first, then each column top to bottom (columns
inside a column are found the same way). Rows whose two sides line up one for one - a receipt's item and price, a
form's label and value, a table, a statement - are read across unless both sides are full lines of prose (an
article set in two columns), because reading them column by column would tear each row apart. Rows that meet only
by chance - two windows side by side, one side of a row holding two lines of its own - do not count as lined up.

Paragraphs join wrapped lines: the next line starts at the paragraph's left edge, lies less than about a line's
height below, has the same height, and its first word would not have fitted at the end of the line before. No space
is put between two CJK characters, and a word hyphenated at the end of a line is joined.

Modes (`LAYOUT_MODES`): "auto" (reading order, one output line per text line), "paragraphs" (wrapped lines joined)
and "raw" (one line per box, in the detector's own order).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from collections.abc import Sequence

LAYOUT_MODES = ("auto", "paragraphs", "raw")
DEFAULT_LAYOUT = "auto"

#: A gutter must stay empty over at least this many text rows, and each side must hold text in two of them.
MIN_COLUMN_ROWS = 3
#: Narrowest gutter, in text heights (the gap detectors leave between words of one line is smaller).
MIN_GUTTER = 0.5
#: Below this share of rows with text on both sides on one line, the two sides run on lines of their own: columns.
ALIGNED_ROWS = 0.6
#: Two parts of a row are on one line when their middles are less than this many text heights apart.
ALIGNED_OFFSET = 0.35
#: Prose columns: at least this many text heights wide, the text of their lines covering this share of the width.
PROSE_WIDTH, PROSE_FILL = 8.0, 0.6
#: A line of prose has no gap wider than this many text heights (the widest word spaces of justified text); the
#: items of a widget row - buttons, toolbar entries, a label and its field - stand further apart.
PROSE_GAP = 1.0
#: A side of a gutter whose rows are split by such gaps more often than this is widget rows, not prose.
PROSE_SPLIT_ROWS = 1 / 3
#: Paragraphs: the gap between two wrapped lines is under this many text heights (about 1.2 line heights of pitch).
PARAGRAPH_GAP = 0.6

Line = list["TextBox"]


@dataclass(frozen=True)
class TextBox:
    """One piece of text the detector found, with its axis-aligned bounds in pixels."""

    text: str
    left: float
    top: float
    right: float
    bottom: float
    #: One box per non-space character of `text`, in order, where the recogniser gave them (for tables), so
    #: that a box the detector drew across a ruling can be cut there; else empty.
    chars: tuple[TextBox, ...] = field(default=(), repr=False)

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def moved(self, dx: float, dy: float, scale: float = 1.0) -> TextBox:
        """The box scaled about the origin, then shifted (from a tile or a resized image to the page)."""
        chars = tuple(char.moved(dx, dy, scale) for char in self.chars)
        return TextBox(self.text, self.left * scale + dx, self.top * scale + dy, self.right * scale + dx,
                       self.bottom * scale + dy, chars)


def arrange(boxes: Sequence[TextBox], mode: str = DEFAULT_LAYOUT) -> list[str]:
    """The text of the boxes as output lines: see the module's docstring for the modes."""
    if mode == "raw":
        return [box.text for box in boxes]
    blocks = reading_order(boxes)
    if mode == "paragraphs":
        return [paragraph for block in blocks for paragraph in paragraphs(block)]
    if mode == "auto":
        return [join_line([box.text for box in line]) for block in blocks for line in block]
    raise ValueError(f"unknown layout {mode!r}; choose one of {', '.join(LAYOUT_MODES)}")


# ------------------------------------------------------------------------------------------------ lines


def group_into_lines(boxes: Sequence[TextBox]) -> list[Line]:
    """Group boxes into text lines: lines top to bottom, boxes left to right within a line.

    A box joins the line above it when their vertical extents overlap by at least half the smaller height,
    which keeps words of one slightly skewed line together but never merges two stacked lines. The line's extent
    is that of its typical box (median top and bottom), not the union of all: the union grows with each box, and
    where two windows side by side have lines at different heights, their boxes chained lines into blobs.
    """
    lines: list[Line] = []
    for box in sorted(boxes, key=lambda box: box.top + box.bottom):
        if lines and _overlaps_line(box, lines[-1]):
            lines[-1].append(box)
        else:
            lines.append([box])
    return [sorted(line, key=lambda box: box.left) for line in lines]


def _overlaps_line(box: TextBox, line: Line) -> bool:
    top, bottom = statistics.median(other.top for other in line), statistics.median(other.bottom for other in line)
    overlap = min(box.bottom, bottom) - max(box.top, top)
    return overlap >= 0.5 * min(box.height, bottom - top)


def join_line(texts: Sequence[str]) -> str:
    """Join the texts of one line with spaces, but with nothing between two CJK characters (no spaces in CJK)."""
    joined = ""
    for text in texts:
        if joined and text and not (is_cjk(joined[-1]) and is_cjk(text[0])):
            joined += " "
        joined += text
    return joined


#: Han ideographs, kana, CJK punctuation and full-width forms: scripts written without spaces between words.
#: Hangul is left out on purpose: Korean separates words with spaces.
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def is_cjk(char: str) -> bool:
    return bool(_CJK.match(char))


# ---------------------------------------------------------------------------------------------- columns


def reading_order(boxes: Sequence[TextBox]) -> list[list[Line]]:
    """The boxes as blocks in reading order, each block a list of lines top to bottom.

    Rows outside any column section form full-width blocks; a column section gives one block per column, left
    to right (each searched for columns of its own).
    """
    rows = group_into_lines(boxes)
    if len(rows) < MIN_COLUMN_ROWS:
        return [rows] if rows else []
    unit = statistics.median(box.height for box in boxes)
    span = (min(box.left for box in boxes), max(box.right for box in boxes))
    blocks: list[list[Line]] = []
    single: list[Line] = []  # full-width rows not yet emitted
    start = 0
    while start < len(rows):
        section = _column_section(rows, start, unit, span)
        if section is None:
            single.append(rows[start])
            start += 1
            continue
        end, gutters = section
        if single:
            blocks.append(single)
            single = []
        for column in _split_columns(rows[start:end], gutters):
            blocks.extend(reading_order(column))
        start = end
    if single:
        blocks.append(single)
    return blocks


Interval = tuple[float, float]


def _column_section(rows: list[Line], start: int, unit: float, span: Interval) -> tuple[int, list[float]] | None:
    """(end row, gutter positions) of the column section starting at `rows[start]`, or None if none starts there.

    Candidate gutters are the stretches left empty by the first MIN_COLUMN_ROWS rows together, away from the
    margins; each is followed down while it stays at least MIN_GUTTER text heights wide.
    """
    if start + MIN_COLUMN_ROWS > len(rows):
        return None
    window = rows[start:start + MIN_COLUMN_ROWS]
    candidates = _free(sorted((box for row in window for box in row), key=lambda box: box.left), span)
    found: list[tuple[int, float]] = []
    for low, high in candidates:
        if low <= span[0] or high >= span[1] or high - low < MIN_GUTTER * unit:
            continue  # a margin, or too narrow
        end = start + MIN_COLUMN_ROWS
        while end < len(rows):
            narrowed = _widest_overlap(_free(rows[end], span), (low, high))
            if narrowed is None or narrowed[1] - narrowed[0] < MIN_GUTTER * unit:
                break
            low, high = narrowed
            end += 1
        if _is_gutter(rows[start:end], (low + high) / 2, unit):
            found.append((end, (low + high) / 2))
    if not found:
        return None
    end = min(end for end, _ in found)
    return end, sorted(position for _, position in found)


def _free(row: Sequence[TextBox], span: Interval) -> list[Interval]:
    """The stretches of `span` no box of the row (sorted by left edge) covers."""
    free, reached = [], span[0]
    for box in row:
        if box.left > reached:
            free.append((reached, box.left))
        reached = max(reached, box.right)
    if reached < span[1]:
        free.append((reached, span[1]))
    return free


def _widest_overlap(free: list[Interval], gap: Interval) -> Interval | None:
    overlaps = [(max(low, gap[0]), min(high, gap[1])) for low, high in free if min(high, gap[1]) > max(low, gap[0])]
    return max(overlaps, key=lambda interval: interval[1] - interval[0], default=None)


def _is_gutter(rows: list[Line], position: float, unit: float) -> bool:
    """Whether the empty stretch at `position` parts two columns rather than the cells of aligned rows."""
    left_rows = [[box for box in row if box.centre[0] < position] for row in rows]
    right_rows = [[box for box in row if box.centre[0] >= position] for row in rows]
    left_count, right_count = sum(map(bool, left_rows)), sum(map(bool, right_rows))
    if min(left_count, right_count) < 2:
        return False
    both = sum(bool(left) and bool(right) and _aligned(left, right, unit) and _one_line(left) and _one_line(right)
               for left, right in zip(left_rows, right_rows))
    if both < ALIGNED_ROWS * min(left_count, right_count):
        return True
    return _is_prose(left_rows, unit) and _is_prose(right_rows, unit)


def _aligned(left: Line, right: Line, unit: float) -> bool:
    """Whether two parts of a row sit on one line (a descender or a slight skew moves a centre a little)."""
    def middle(boxes: Line) -> float:
        return sum(box.top + box.bottom for box in boxes) / (2 * len(boxes))

    return abs(middle(left) - middle(right)) <= ALIGNED_OFFSET * unit


def _one_line(boxes: Line) -> bool:
    """Whether the boxes (one side of a row) are one line: a side holding two lines stacked has lines of its own,
    at another pitch than the other side's - a window or panel beside another."""
    return len(group_into_lines(boxes)) == 1


def _is_prose(rows: list[Line], unit: float) -> bool:
    """Whether the rows (one side of a gutter) read as wrapped prose: a few lines, wide, filling the width, each
    line one run of text rather than items set apart (a gutter of columns further on does not count as a gap)."""
    rows = [row for row in rows if row]
    if len(rows) < MIN_COLUMN_ROWS:
        return False
    extents = [(min(box.left for box in row), max(box.right for box in row)) for row in rows]
    side = (min(left for left, _ in extents), max(right for _, right in extents))
    # What the text covers, not how far each row reaches: the rows of a statement or a spreadsheet reach across
    # the side too, but its cells leave most of the width empty.
    filled = statistics.median(_covered(row) for row in rows)
    everywhere = sorted((box for row in rows for box in row), key=lambda box: box.left)
    gutters = [(low, high) for low, high in _free(everywhere, side) if high - low >= MIN_GUTTER * unit]
    split = sum(_has_wide_gap(row, PROSE_GAP * unit, gutters) for row in rows)
    width = side[1] - side[0]
    return width >= PROSE_WIDTH * unit and filled >= PROSE_FILL * width and split <= PROSE_SPLIT_ROWS * len(rows)


def _covered(row: Line) -> float:
    """How much of the horizontal axis the row's boxes cover (overlaps counted once)."""
    boxes = sorted(row, key=lambda box: box.left)
    span = (boxes[0].left, max(box.right for box in boxes))
    return span[1] - span[0] - sum(high - low for low, high in _free(boxes, span))


def _has_wide_gap(row: Line, gap: float, gutters: list[Interval]) -> bool:
    """Whether the row's boxes leave a horizontal gap wider than `gap` that holds none of `gutters`."""
    boxes = sorted(row, key=lambda box: box.left)
    reached = boxes[0].right
    for box in boxes[1:]:
        if box.left - reached > gap and not any(reached <= low and high <= box.left for low, high in gutters):
            return True
        reached = max(reached, box.right)
    return False


def _split_columns(rows: list[Line], gutters: list[float]) -> list[list[TextBox]]:
    columns: list[list[TextBox]] = [[] for _ in range(len(gutters) + 1)]
    for row in rows:
        for box in row:
            columns[sum(box.centre[0] >= gutter for gutter in gutters)].append(box)
    return [column for column in columns if column]


# ------------------------------------------------------------------------------------------- paragraphs


_BULLET = re.compile(r"^(?:[-•·*▪◦‣–—]|\d{1,3}[.)]|[a-zA-Z][.)])\s")


def paragraphs(lines: Sequence[Line]) -> list[str]:
    """The lines of one block (top to bottom) with wrapped lines joined into paragraphs."""
    found: list[str] = []
    current: list[Line] = []
    for line in lines:
        if current and _continues(current, line):
            found[-1] = _join_wrapped(found[-1], join_line([box.text for box in line]))
            current.append(line)
        else:
            found.append(join_line([box.text for box in line]))
            current = [line]
    return found


def _continues(paragraph: list[Line], line: Line) -> bool:
    """Whether `line` carries on the paragraph: the one before it wrapped into it."""
    last = _bounds(paragraph[-1])
    following = _bounds(line)
    height = max(last.height, following.height)
    if abs(last.height - following.height) > 0.3 * height:
        return False  # another font size: a heading, a caption
    if not -0.3 * height <= following.top - last.bottom <= PARAGRAPH_GAP * height:
        return False
    left = _bounds(paragraph[1]).left if len(paragraph) > 1 else following.left
    first_left = _bounds(paragraph[0]).left
    if abs(following.left - left) > 0.8 * height or not -0.8 * height <= first_left - left <= 4 * height:
        return False  # edges do not match (an indented first line is allowed)
    if _BULLET.match(following.text):
        return False
    right = max(max(_bounds(each).right for each in paragraph), following.right)
    return last.right + _first_word_width(following) >= right - 0.5 * height


def _bounds(line: Line) -> TextBox:
    """The whole line as one box (its text joined)."""
    return TextBox(join_line([box.text for box in line]), min(box.left for box in line),
                   min(box.top for box in line), max(box.right for box in line), max(box.bottom for box in line))


def _first_word_width(line: TextBox) -> float:
    """About how wide the line's first word (a CJK character) is, with the space before it."""
    text = line.text
    if not text:
        return 0.0
    first = text[0] if is_cjk(text[0]) else text.split()[0] + " "
    return line.width * len(first) / len(text)


def _join_wrapped(text: str, following: str) -> str:
    """Join a line to the one it wrapped into: no space in CJK, a hyphenated word made whole."""
    if not text or not following:
        return text + following
    if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and following[0].islower():
        return text[:-1] + following
    if is_cjk(text[-1]) and is_cjk(following[0]):
        return text + following
    return text + " " + following
