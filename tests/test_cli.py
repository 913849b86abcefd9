"""The `edgevl` command line, run in-process as a user would type it."""

from __future__ import annotations

import difflib
import importlib.util
import json

import pytest
from conftest import noise_image
from edgevl.drawing import render_table, render_text

from edgevl.cli import main

LINES = ["Invoice 2024-118", "Total due: 1,234.50 EUR", "Payment within 30 days"]
CELLS = [["Name", "Qty", "Price"], ["Apple", "3", "1.20"], ["Pear", "10", "0.80"]]


@pytest.fixture
def screenshot(tmp_path):
    path = tmp_path / "shot.png"
    render_text(LINES).save(path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ocr_with_the_embedded_engine(capsys, screenshot):
    status, out, _ = run(capsys, "ocr", screenshot)
    assert status == 0
    assert difflib.SequenceMatcher(None, "\n".join(LINES), out.strip()).ratio() >= 0.98


def test_ocr_json_and_a_folder_of_images(capsys, screenshot, tmp_path):
    render_text(["Second image"]).save(tmp_path / "b.png")
    status, out, _ = run(capsys, "ocr", tmp_path, "--format", "json")
    assert status == 0
    assert out.count("==> ") == 2 and '"text": "Second image"' in out


def test_ocr_and_batch_take_a_layout(capsys, tmp_path):
    wrapped = ["A sentence long enough that it", "wraps onto a second line here."]
    path = tmp_path / "wrapped.png"
    render_text(wrapped, line_spacing=1.3).save(path)
    status, out, _ = run(capsys, "ocr", path, "--layout", "paragraphs")
    assert status == 0 and out.strip() == " ".join(wrapped)
    status, _, _ = run(capsys, "batch", path, "-o", tmp_path / "out.jsonl", "--layout", "paragraphs")
    assert status == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["output"] == " ".join(wrapped)
    with pytest.raises(SystemExit):
        main(["ocr", str(path), "--layout", "columns"])
    assert "invalid choice: 'columns'" in capsys.readouterr().err


def test_table_to_csv_and_json(capsys, tmp_path):
    path = tmp_path / "table.png"
    render_table(CELLS).save(path)
    status, out, _ = run(capsys, "table", path, "--format", "csv")
    assert status == 0 and out.splitlines() == ["Name,Qty,Price", "Apple,3,1.20", "Pear,10,0.80"]
    status, out, _ = run(capsys, "table", path, "-f", "json")
    assert status == 0 and json.loads(out) == [dict(zip(CELLS[0], row)) for row in CELLS[1:]]


def test_caption_without_a_model_says_how_to_get_one(capsys, screenshot):
    status, out, err = run(capsys, "caption", screenshot)
    assert status == 1 and out == ""
    assert "needs a vision-language model" in err and "edgevl convert" in err


def test_bad_inputs_are_one_line_errors(capsys, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    assert run(capsys, "ocr", tmp_path / "bad.png")[0] == 1
    status, _, err = run(capsys, "ocr", tmp_path / "missing.png")
    assert status == 1 and "no such file" in err and "Traceback" not in err
    status, _, err = run(capsys, "ocr", tmp_path / "bad.png", "--model", tmp_path / "no-model")
    assert status == 1 and "no such model folder" in err


@pytest.mark.slow
def test_convert_then_run_every_task_and_list(capsys, qwen2vl_checkpoint, tmp_path, monkeypatch):
    models = tmp_path / "models"
    status, _, err = run(capsys, "convert", qwen2vl_checkpoint, "-o", models / "tiny", "--quant", "q8_0")
    assert status == 0 and "done" in err
    image = tmp_path / "noise.png"
    noise_image(90, 60).save(image)
    common = ["--model", models / "tiny", "--max-tokens", "6", "--threads", "1"]
    for argv in (["ocr", image], ["caption", image, "--length", "short"], ["ask", image, image, "What is it?"],
                 ["table", image, "-f", "md"]):
        status, out, err = run(capsys, *argv, *common)
        assert status == 0, err
    monkeypatch.setenv("EDGEVL_MODELS", str(models))
    status, out, _ = run(capsys, "models")
    assert status == 0 and "tiny" in out and "q8_0" in out
    status, out, _ = run(capsys, "ocr", image, "--model", "tiny", "--max-tokens", "3", "--threads", "1")
    assert status == 0  # a bare name is looked up in the models folder
    status, _, err = run(capsys, "convert", qwen2vl_checkpoint, "-o", models / "tiny")
    assert status == 1 and "already exists" in err


def test_doctor_reports_backends(capsys):
    status, _, err = run(capsys, "doctor")
    assert status == 0
    assert "embedded OCR engine" in err and "llama.cpp (GGUF)" in err and "ONNX Runtime" in err
    # the GPU line follows a llama.cpp that loads; a base install says how to get one instead
    assert ("GPU offload" in err) == (importlib.util.find_spec("llama_cpp") is not None)
