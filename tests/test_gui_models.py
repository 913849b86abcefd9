"""The desktop app with a tiny converted Qwen2-VL (random weights: the words are nonsense, the plumbing is
real): every task streams through llama.cpp, and the model manager lists, converts, cancels and deletes."""

from __future__ import annotations

import shutil

import pytest

from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, data_dir, models_folder, open_window, wait_until_idle,
)
from edgevl.gui.widgets.model_manager import ModelManager
from edgevl.llamacpp_lib import load_llama_cpp
from edgevl.drawing import render_text

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def tiny_model(qwen2vl_gguf, models_folder):
    """The tiny model installed in the models folder (f16: converted without llama.cpp's quantizer)."""
    installed = models_folder / "qwen2vl-tiny"
    shutil.copytree(qwen2vl_gguf("f16"), installed)
    return installed


@pytest.fixture
def window(qtbot, data_dir, tiny_model):
    window = open_window(qtbot, data_dir)
    window.settings.max_tokens = 12  # enough to see streaming, quick on a loaded machine
    window.model.setCurrentIndex(window.model.findData(str(tiny_model)))
    return window


@pytest.mark.parametrize("task", ["ocr", "table", "caption", "ask"])
def test_each_task_streams_from_the_converted_model(qtbot, window, task):
    window.task.setCurrentIndex(window.task.findData(task))
    window.question.setText("What is written here?")
    pieces = []
    window.add_image(render_text(["Hello"]), "hello.png")
    window.job.signals.progress.connect(lambda piece: pieces.append(piece))
    wait_until_idle(qtbot, window)
    item = window.queue.queue_items()[0]
    assert item.state == "done", item.error
    assert len(pieces) > 1 and "".join(pieces) == item.answer.raw == item.streamed
    assert "llama.cpp" in item.answer.engine
    if not load_llama_cpp("tests").llama_supports_gpu_offload():  # a CPU-only build says why, in plain words
        assert "GPU not used: CPU only: this llama-cpp-python build has no GPU backend" in item.answer.engine


def test_a_damaged_model_is_reported_in_plain_words(qtbot, window, tiny_model):
    text_file = next(tiny_model.glob("qwen2vl*.gguf"))
    text_file.write_bytes(text_file.read_bytes()[:1000])
    window.add_image(render_text(["Hello"]), "hello.png")
    wait_until_idle(qtbot, window)
    assert "truncated" in window.error_banner.text() and "convert the model again" in window.error_banner.text()


def test_model_manager_lists_converts_cancels_and_deletes(qtbot, window, tiny_model, qwen2vl_checkpoint,
                                                          models_folder):
    manager = ModelManager(window.host, window)
    qtbot.addWidget(manager)
    manager.models_changed.connect(window.refresh_models)
    assert [model.name for model in manager.models] == ["qwen2vl-tiny"]
    assert manager.table.item(0, 3).text() == "f16"

    steps = []
    job = manager.start_conversion(qwen2vl_checkpoint, "converted-q8", "q8_0")  # and verified (the default)
    job.signals.progress.connect(lambda event: steps.append(event))
    qtbot.waitUntil(lambda: manager.job is None, timeout=3 * TIMEOUT_MS)
    assert "Converted" in manager.step_label.text()
    assert any(event[0] == "advance" for event in steps)
    row = [model.name for model in manager.models].index("converted-q8")
    assert manager.table.item(row, 6).text().startswith("ok ")  # the Verified column
    assert window.model.findData(str(models_folder / "converted-q8")) >= 0  # the main window knows it

    manager.start_conversion(qwen2vl_checkpoint, "cancelled", "f16")
    manager.cancel_conversion()
    qtbot.waitUntil(lambda: manager.job is None, timeout=TIMEOUT_MS)
    assert "cancelled" in manager.step_label.text()
    assert sorted(path.name for path in models_folder.iterdir()) == ["converted-q8", "qwen2vl-tiny"]

    window.add_image(render_text(["Hi"]), "hi.png")  # load the model that is deleted next
    wait_until_idle(qtbot, window)
    manager.delete(tiny_model)
    qtbot.waitUntil(lambda: not tiny_model.exists(), timeout=TIMEOUT_MS)
    assert [model.name for model in manager.models] == ["converted-q8"]
    assert window.model.findData(str(tiny_model)) == -1


@pytest.mark.parametrize("checkpoint", ["qwen2vl", "minicpmv-2.6", "minicpmv-2.5"])
def test_model_manager_exports_onnx_and_the_app_runs_it(qtbot, window, checkpoint, request, models_folder):
    if checkpoint == "qwen2vl":
        source = request.getfixturevalue("qwen2vl_checkpoint")
    else:
        source = request.getfixturevalue("minicpmv_checkpoint")(checkpoint.split("-")[1])
    manager = ModelManager(window.host, window)
    qtbot.addWidget(manager)
    manager.models_changed.connect(window.refresh_models)
    manager.verify.setChecked(False)  # tested above, and by tests/test_verify.py
    assert manager.quant.findData("onnx:int4") >= 0
    manager.start_conversion(source, "tiny-onnx", "int4", "onnx")
    qtbot.waitUntil(lambda: manager.job is None, timeout=TIMEOUT_MS)
    assert "Converted" in manager.step_label.text()
    row = [model.name for model in manager.models].index("tiny-onnx")
    assert manager.table.item(row, 1).text() == "ONNX"

    window.model.setCurrentIndex(window.model.findData(str(models_folder / "tiny-onnx")))
    window.add_image(render_text(["Hi"]), "hi.png")
    wait_until_idle(qtbot, window)
    assert "ONNX Runtime" in window.statusBar().currentMessage()
