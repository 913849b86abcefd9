"""The desktop app with a tiny converted Qwen2-VL (random weights: the words are nonsense, the plumbing is
real): every task streams through llama.cpp, and the model manager lists, converts, cancels and deletes; it
downloads from a stand-in hub (cancel, then resume) and imports GGUF files (these need no checkpoint: not slow)."""

from __future__ import annotations

import shutil

import pytest

from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, data_dir, models_folder, open_window, wait_until_idle,
)
from edgevl.gui.widgets.model_manager import ModelManager
from edgevl.llamacpp_lib import load_llama_cpp
from edgevl.drawing import render_text

pytestmark = pytest.mark.gui


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_damaged_model_is_reported_in_plain_words(qtbot, window, tiny_model):
    text_file = next(tiny_model.glob("qwen2vl*.gguf"))
    text_file.write_bytes(text_file.read_bytes()[:1000])
    window.add_image(render_text(["Hello"]), "hello.png")
    wait_until_idle(qtbot, window)
    assert "truncated" in window.error_banner.text() and "convert the model again" in window.error_banner.text()


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_conversion_without_room_on_the_disk_is_refused_in_plain_words(qtbot, manager, tmp_path, monkeypatch):
    """The library's check before any work (converters/disk_space.py) reaches the model manager as its message."""
    pytest.importorskip("transformers")
    from edgevl.converters import disk_space
    from edgevl.testing.qwen2vl import QWEN2VL_2B, build_qwen2vl_checkpoint

    checkpoint = build_qwen2vl_checkpoint(tmp_path / "2b", QWEN2VL_2B, dtype="bfloat16", sparse=True)
    monkeypatch.setattr(disk_space.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9))  # 1 GB free
    manager.start_conversion(checkpoint, "qwen2-vl-2b", "q4_k_m")
    qtbot.waitUntil(lambda: manager.job is None, timeout=TIMEOUT_MS)
    assert "not enough disk space" in manager.step_label.text() and "1.0 GB is free" in manager.step_label.text()
    assert manager.step_label.styleSheet() and manager.models == []



# ---- downloading and importing (no checkpoint needed) -------------------------------------------------------------

gguf = pytest.importorskip("gguf")
pytest.importorskip("huggingface_hub")

from huggingface_hub import constants  # noqa: E402
from test_gguf_import import write_mmproj_gguf, write_text_gguf  # noqa: E402
from test_pull import MMPROJ, TEXT, gguf_repo, resolve_gets, serve  # noqa: E402, F401 - fixtures

from edgevl.gui.widgets.model_sources import DownloadDialog  # noqa: E402
from edgevl.api import conversion_choices  # noqa: E402
from edgevl.model_cards import all_cards, card_by_id  # noqa: E402

CARD = "qwen2-vl-2b-instruct"


@pytest.fixture
def manager(qtbot, data_dir, models_folder):
    window = open_window(qtbot, data_dir)
    manager = ModelManager(window.host, window)
    qtbot.addWidget(manager)
    return manager


def test_download_dialog_shows_the_catalogue(qtbot):
    dialog = DownloadDialog(ram_bytes=4 * 10**9)
    qtbot.addWidget(dialog)
    cards = [card for card in all_cards() if card.hub_id]
    assert dialog.table.rowCount() == len(cards)
    row = [card.id for card in cards].index(CARD)
    cells = [dialog.table.item(row, column).text() for column in range(5)]
    assert cells == ["Qwen2-VL-2B-Instruct", "4.4 GB", "3.7 GB", "apache-2.0", "GGUF, ONNX"]
    big = [card.id for card in cards].index("qwen2-vl-7b-instruct")
    assert dialog.table.item(big, 2).foreground().color().name() == "#b3261e"  # more than the 4 GB here
    dialog.select(CARD)
    assert dialog.quant.currentData() == "gguf:q4_k_m" and "3.7 GB of memory" in dialog.advice.text()
    assert "estimated" not in dialog.advice.text()  # q4_k_m's figure is measured
    onnx_here = [choice for choice in ("onnx:int4", "onnx:fp16") if ("onnx", choice[5:]) in conversion_choices()]
    assert [choice for choice in onnx_here if dialog.quant.findData(choice) >= 0] == onnx_here
    dialog.quant.setCurrentIndex(dialog.quant.findData("gguf:f16"))
    assert "5.2 GB of memory" in dialog.advice.text() and "estimated" not in dialog.advice.text()
    dialog.select("qwen2-vl-7b-instruct")
    dialog.quant.setCurrentIndex(dialog.quant.findData("gguf:q8_0"))
    assert "11.8 GB of memory" in dialog.advice.text() and "estimated" in dialog.advice.text()


def test_download_needs_the_converter(qtbot, monkeypatch):
    monkeypatch.setattr("edgevl.api.conversion_choices", lambda: [])
    dialog = DownloadDialog()
    qtbot.addWidget(dialog)
    assert not dialog.download_button.isEnabled() and "no converter" in dialog.panel.status.text()


def test_download_cancelled_then_resumed_adds_the_model(qtbot, manager, serve, gguf_repo, models_folder,
                                                        monkeypatch):
    """The hub drops the connection after 200 bytes; while huggingface_hub waits to retry, Cancel stops the
    download. Download again asks the hub only for the rest, and the model shows up in the manager."""
    hub = serve({card_by_id(CARD).hub_id: gguf_repo}, cut_after={TEXT: [200]})
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 50)
    dialog = manager.open_source_dialog("download")
    dialog.select(CARD)
    dialog.start_download()
    qtbot.waitUntil(lambda: dialog.panel.progress.value() >= 200, timeout=TIMEOUT_MS)
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=TIMEOUT_MS)
    assert "continue where it stopped" in dialog.panel.status.text()
    assert manager.models == []

    dialog.start_download()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=TIMEOUT_MS)
    assert "Downloaded:" in dialog.panel.status.text(), dialog.panel.status.text()
    ranges = resolve_gets(hub, TEXT)
    assert ranges[0] is None and ranges[-1] is not None and int(ranges[-1][6:-1]) >= 200
    assert [model.manifest.quant for model in manager.models] == ["q4_k_m"]


def test_import_gguf_files_and_a_folder(qtbot, manager, tmp_path):
    text, mmproj = write_text_gguf(tmp_path / TEXT), write_mmproj_gguf(tmp_path / MMPROJ)
    dialog = manager.open_source_dialog("import")
    dialog.start_import(mmproj, text)  # swapped: refused in plain words
    qtbot.waitUntil(lambda: dialog.job is None, timeout=TIMEOUT_MS)
    assert "a vision projector, not a language model" in dialog.panel.status.text()
    assert dialog.panel.status.styleSheet() and manager.models == []

    dialog.start_import(text, mmproj)
    qtbot.waitUntil(lambda: dialog.job is None, timeout=TIMEOUT_MS)
    assert "Imported:" in dialog.panel.status.text()
    assert [model.manifest.family for model in manager.models] == ["qwen2vl"]

    folder = tmp_path / "lm-studio"
    folder.mkdir()
    write_text_gguf(folder / "Tiny-Q8_0.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    write_mmproj_gguf(folder / MMPROJ)
    dialog.text.setText(str(folder))
    dialog.import_button.click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=TIMEOUT_MS)
    assert sorted(model.manifest.quant for model in manager.models) == ["q4_k_m", "q8_0"]
