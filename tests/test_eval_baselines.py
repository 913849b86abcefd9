"""Baseline engines of `edgevl eval` (plain RapidOCR, its recogniser alone, Tesseract) and the table-cell helpers of
the embedded engine, on images drawn at test time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgevl.drawing import default_font, render_text

from edgevl.engines.classic import _split_at_cells, _structure_html
from edgevl.errors import EdgevlError
from edgevl.eval.baselines import open_baseline
from edgevl.eval.datasets import load_dataset
from edgevl.eval.report import score_run
from edgevl.eval.runner import RunSettings, run_models
from edgevl.layout import TextBox

LINE = "Total due: 1,234.50 EUR"


def test_baselines_run_through_the_evaluation_and_read_plainly(tmp_path: Path) -> None:
    render_text([LINE], default_font(24), margin=3, line_spacing=1.1).save(tmp_path / "line.png")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"image": "line.png", "text": LINE}) + "\n")
    samples = load_dataset(tmp_path)
    labels = run_models(samples, ["baseline:rapidocr-rec"], tmp_path / "out", RunSettings(dataset="t", threads=1))
    assert labels == ["baseline_rapidocr-rec"]
    (result,) = score_run(samples, tmp_path / "out", labels)
    assert result.tasks["ocr"].metrics["CER"] < 0.05 and result.info["format"] == "baseline"


def test_unknown_baseline_is_a_clear_error() -> None:
    with pytest.raises(EdgevlError, match="unknown baseline 'abbyy'; choose one of baseline:rapidocr"):
        open_baseline("baseline:abbyy")


def test_tesseract_baseline_reads_a_line() -> None:
    pytest.importorskip("tesserocr")
    if not any(Path(place, "eng.traineddata").is_file() for place in
               ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")):
        pytest.skip("no tessdata (apt-get install tesseract-ocr-eng)")
    from edgevl.tasks import get_task

    with open_baseline("baseline:tesseract", threads=1) as engine:
        image = render_text([LINE], default_font(28))
        assert LINE in "".join(engine.stream(get_task("ocr").build_request([image], engine.family)))


# ------------------------------------------------------------------------------------ table cells (SLANet path)


def chars_of(text: str, left: float, width: float = 10) -> TextBox:
    chars = tuple(TextBox(char, left + index * width, 0, left + (index + 1) * width - 2, 20)
                  for index, char in enumerate(text) if char != " ")
    return TextBox(text, left, 0, left + len(text) * width, 20, chars)


def test_a_text_box_across_two_cells_is_cut_at_the_gap_between_them() -> None:
    cells = [[0, 0, 95, 20], [95, 0, 200, 20]]
    pieces = _split_at_cells(chars_of("0.310 2.268", 40), cells)
    assert [piece.text for piece in pieces] == ["0.310", "2.268"]
    assert [piece.text for piece in _split_at_cells(chars_of("Hazard", 70), cells)] == ["Hazard"]  # no gap: whole


def test_structure_keeps_the_header_and_escapes_text() -> None:
    structure = ["<html>", "<body>", "<table>", "<thead>", "<tr>", "<td></td>", "<td", ' colspan="2"', ">",
                 "</td>", "</tr>", "</thead>", "<tbody>", "<tr>", "<td></td>", "<td></td>", "<td></td>", "</tr>",
                 "</tbody>", "</table>", "</body>", "</html>"]
    html = _structure_html(structure, ["Name", "Score", "A&B", "1", "2"])
    assert html == ('<table><thead><tr><td>Name</td><td colspan="2">Score</td></tr></thead><tbody><tr>'
                    "<td>A&amp;B</td><td>1</td><td>2</td></tr></tbody></table>")

