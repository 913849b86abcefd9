"""The command line as a careless user types it: malformed options are usage errors (exit 2) before anything
runs; runtime failures - outputs that cannot be written, empty folders, unreadable images, bad checkpoints - are
one line with exit 1, and never a traceback."""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from edgevl.drawing import render_text

from edgevl.cli import main
from edgevl.converters.checkpoint import Checkpoint
from edgevl.converters.output import staged_folder
from edgevl.errors import CheckpointError, EdgevlError, ImageError
from edgevl.images import load_image
from edgevl.manifest import MANIFEST_NAME


def run(capsys, *argv: object) -> tuple[int, str, str]:
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as leaving:  # argparse's usage errors
        status = leaving.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "shot.png"
    render_text(["Hello"]).save(path)
    return path


BAD_OPTIONS = [
    ["serve", "--port", "99999"],
    ["serve", "--port", "-1"],
    ["serve", "--port", "http"],
    ["serve", "--port", "80.5"],
    ["serve", "--max-request-mb", "nan"],
    ["serve", "--max-request-mb", "inf"],
    ["serve", "--max-request-mb", "-1"],
    ["serve", "--max-request-mb", "0"],
    ["serve", "--max-request-mb", "1e400"],
    ["serve", "--max-image-mp", "nan"],
    ["serve", "--max-image-mp", "-5"],
    ["serve", "--max-images", "0"],
    ["serve", "--max-request-mp", "inf"],
    ["serve", "--queue", "-1"],
    ["serve", "--queue", "lots"],
    ["serve", "--threads", "0"],
    ["ocr", "IMAGE", "--threads", "-3"],
    ["ocr", "IMAGE", "--threads", "two"],
    ["ocr", "IMAGE", "--max-tokens", "-5"],
    ["ocr", "IMAGE", "--max-tokens", "0"],
    ["ocr", "IMAGE", "--max-tokens", "1e3"],
    ["ocr", "IMAGE", "--temperature", "nan"],
    ["ocr", "IMAGE", "--temperature", "-1"],
    ["ocr", "IMAGE", "--temperature", "3"],
    ["ocr", "IMAGE", "--temperature", "inf"],
    ["ocr", "IMAGE", "--image-tokens", "0"],
    ["ocr", "IMAGE", "--context", "-1"],
    ["ocr", "IMAGE", "--context", "8k"],
    ["ocr", "IMAGE", "--format", "pdf"],
    ["ocr", "IMAGE", "--bogus"],
    ["ocr"],
    ["table", "IMAGE", "--format", "xlsx"],
    ["caption", "IMAGE", "--length", "huge"],
    ["ask", "IMAGE"],
    ["batch", "IMAGE", "-o", "OUT", "--concurrency", "0"],
    ["batch", "IMAGE", "-o", "OUT", "--concurrency", "1.5"],
    ["batch", "IMAGE", "-o", "OUT", "--task", "draw"],
    ["batch", "IMAGE"],
    ["convert", "CKPT", "-o", "OUT", "--block-size", "0"],
    ["convert", "CKPT", "-o", "OUT", "--threads", "-1"],
    ["convert", "CKPT", "-o", "OUT", "--to", "tflite"],
    ["convert", "CKPT"],
    ["eval", "synth", "--out", "OUT", "--n", "0"],
    ["eval", "synth", "--out", "OUT", "--seed", "-1"],
    ["eval", "run", "CKPT", "-o", "OUT", "--worst", "-1"],
    ["eval", "run", "CKPT", "-o", "OUT", "--limit", "0"],
    ["eval", "run", "CKPT", "-o", "OUT", "--threads", "0"],
    ["eval"],
    ["frobnicate"],
    [],
]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=[" ".join(argv) or "nothing" for argv in BAD_OPTIONS])
def test_malformed_options_are_usage_errors(capsys, tmp_path, image, argv):
    names = {"IMAGE": image, "OUT": tmp_path / "out", "CKPT": tmp_path}
    status, out, err = run(capsys, *[names.get(arg, arg) for arg in argv])
    assert status == 2 and "error:" in err and "Traceback" not in err and out == ""


def test_an_empty_folder_is_an_error(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    status, _, err = run(capsys, "ocr", tmp_path)
    assert status == 1 and "no images in" in err


def test_an_unreadable_image_is_reported_and_the_others_go_on(capsys, tmp_path):
    render_text(["First"]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "c.png").mkdir()  # a folder with an image's name is not taken
    render_text(["Third"]).save(tmp_path / "d.png")
    status, out, err = run(capsys, "ocr", tmp_path)
    assert status == 1
    assert "First" in out and "Third" in out
    assert "b.png" in err and "1 of 3 images could not be read" in err and "Traceback" not in err


@pytest.mark.parametrize("output", ["/dev/full", "/proc/x/out.jsonl", "/proc/version/out.jsonl"])
def test_outputs_that_cannot_be_written_are_one_line(capsys, image, output):
    status, _, err = run(capsys, "batch", image, "-o", output)
    assert status == 1 and "cannot write the results" in err and "Traceback" not in err
    assert sum("error" in line for line in err.splitlines()) == 1  # (besides the progress bar)


def test_stdout_on_a_full_device_is_one_line(image):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "edgevl.cli", "ocr", str(image)], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1 and "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_convert_without_the_convert_extra(capsys, tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name.startswith(("edgevl.converters", "gguf"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if it were not installed
    status, _, err = run(capsys, "convert", tmp_path, "-o", tmp_path / "out")
    assert status == 1 and "needs the convert extra" in err and "pip install 'edgevl[convert]'" in err


def test_force_replaces_only_model_folders_or_empty_ones(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.tex").write_text("years of work")
    with pytest.raises(EdgevlError, match="not an edgevl model folder"):
        with staged_folder(project, overwrite=True):
            pass
    assert (project / "thesis.tex").read_text() == "years of work"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(EdgevlError, match="not an edgevl model folder"):
        with staged_folder(a_file, overwrite=True):
            pass
    for kind in ("empty", "model"):
        folder = tmp_path / kind
        folder.mkdir()
        if kind == "model":
            (folder / MANIFEST_NAME).write_text("{}")
        with staged_folder(folder, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
        assert [path.name for path in folder.iterdir()] == ["new.txt"]


# ---- checkpoints with bad safetensors headers -------------------------------------------------------------------

def safetensors(header: object, data: bytes = b"\0" * 16, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BAD_SAFETENSORS = [
    ("empty", b"", "truncated"),
    ("seven-bytes", b"\x01" * 7, "truncated"),
    ("header-length-huge", struct.pack("<Q", 2**60) + b"{}", "not a safetensors file"),
    ("header-not-json", safetensors(None, raw_header=b"{nope"), "damaged safetensors header"),
    ("header-not-utf8", safetensors(None, raw_header=b'{"\xff": 1}'), "damaged safetensors header"),
    ("header-deep", safetensors(None, raw_header=b"[" * 50_000 + b"]" * 50_000), "damaged safetensors header"),
    ("header-a-list", safetensors([GOOD_ENTRY]), "not a JSON object"),
    ("header-null", safetensors(None), "not a JSON object"),
    ("entry-a-list", safetensors({"w": [1, 2]}), "needs dtype, shape and data_offsets"),
    ("entry-without-dtype", safetensors({"w": {"shape": [2, 2], "data_offsets": [0, 16]}}), "needs dtype"),
    ("dtype-number", safetensors({"w": {**GOOD_ENTRY, "dtype": 5}}), "dtype is not a name"),
    ("dtype-unknown", safetensors({"w": {**GOOD_ENTRY, "dtype": "F8_E4M3"}}), "cannot convert"),
    ("shape-string", safetensors({"w": {**GOOD_ENTRY, "shape": "2x2"}}), "shape is not a list"),
    ("shape-negative", safetensors({"w": {**GOOD_ENTRY, "shape": [-2, -2]}}), "shape is not a list"),
    ("shape-float", safetensors({"w": {**GOOD_ENTRY, "shape": [2.0, 2]}}), "shape is not a list"),
    ("offsets-one", safetensors({"w": {**GOOD_ENTRY, "data_offsets": [16]}}), "data_offsets is not"),
    ("offsets-negative", safetensors({"w": {**GOOD_ENTRY, "data_offsets": [-16, 0]}}), "data_offsets is not"),
    ("offsets-reversed", safetensors({"w": {**GOOD_ENTRY, "data_offsets": [16, 0]}}), "do not hold"),
    ("offsets-wrong-size", safetensors({"w": {**GOOD_ENTRY, "data_offsets": [0, 8]}}), "do not hold"),
    ("offsets-past-the-end", safetensors({"w": {**GOOD_ENTRY, "shape": [4, 4], "data_offsets": [0, 64]}}),
     "truncated"),
    ("shape-huge", safetensors({"w": {**GOOD_ENTRY, "shape": [2**40, 2**40]}}), "do not hold"),
]


@pytest.mark.parametrize("case", BAD_SAFETENSORS, ids=[case[0] for case in BAD_SAFETENSORS])
def test_bad_safetensors_headers_are_one_line(tmp_path, case):
    _, data, fragment = case
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2VLForConditionalGeneration"]}))
    (tmp_path / "model.safetensors").write_bytes(data)
    with pytest.raises(CheckpointError) as raised:
        Checkpoint(tmp_path)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("config", [b"[]", b"null", b"{nope", b"[" * 100_000])
def test_bad_checkpoint_configs_are_one_line(tmp_path, config):
    (tmp_path / "config.json").write_bytes(config)
    (tmp_path / "model.safetensors").write_bytes(safetensors({"w": GOOD_ENTRY}))
    with pytest.raises(CheckpointError):
        Checkpoint(tmp_path)


# ---- images: the header first -----------------------------------------------------------------------------------

def test_a_huge_file_is_refused_from_its_header_without_being_read(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 MP in a few kB
    with path.open("ab") as file:
        file.truncate(1_000_000_000)  # and 1 GB of (sparse) trailing data
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="pixels"):
        load_image(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


@pytest.mark.parametrize("name", ["with\x00nul.png", "missing.png", ""])
def test_odd_paths_are_image_errors(tmp_path, name):
    with pytest.raises(ImageError):
        load_image(str(tmp_path / name) if name else "")
