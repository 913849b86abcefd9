"""The desktop app as someone keeps it open all day: results per image and task, History as its own view,
saved edits, keyboard-only use, the menu bar, layout modes, folders as batches, progress, errors that point to
the fix, window size and place. One test (or more) per defect of issue 14. Offscreen Qt; `pytest -m gui`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from edgevl.engines.base import Engine
from edgevl.gui import engine_host
from edgevl.gui.engine_host import EngineHost
from edgevl.gui.i18n import set_language
from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, SlowEngine, answer_text, data_dir, models_folder, open_window, wait_until_idle,
    window,
)
from edgevl.drawing import render_table, render_text

pytestmark = pytest.mark.gui

LINES = ["Invoice 2024-117", "Total due: 1,250.00 EUR"]
CELLS = [["Item", "Qty", "Price"], ["Apples", "3", "1.20"], ["Pears", "12", "0.85"]]


def choose_task(window, task: str) -> None:
    window.task.setCurrentIndex(window.task.findData(task))


def read(qtbot, window, task: str, image=None, source: str = "a.png"):
    choose_task(window, task)
    item = window.add_image(image or render_text(LINES), source)
    wait_until_idle(qtbot, window)
    return item


def press(qtbot, widget, key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    """A key press the way a user makes it: the window is active, so its shortcuts apply."""
    window = widget.window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT_MS)
    qtbot.keyClick(widget, key, modifiers)


@pytest.fixture
def slow_window(qtbot, data_dir, models_folder):
    """A window on an engine that streams until cancelled and claims every task."""
    engine = SlowEngine()
    window = open_window(qtbot, data_dir, host=EngineHost(opener=lambda choice: engine,
                                                          tasks_of=lambda choice: Engine.tasks))
    yield window
    window.cancel()
    wait_until_idle(qtbot, window)


# ---- 1. the window fits the screen ----------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "zh_CN"])
def test_the_window_can_shrink_to_a_200_percent_screen(qtbot, data_dir, models_folder, language):
    """1600x1000 at 200 % leaves 800x500 logical pixels; every control must still fit."""
    try:
        set_language(language)
        window = open_window(qtbot, data_dir)
    finally:
        set_language("en")
    hint = window.minimumSizeHint()
    assert hint.width() <= 800 and hint.height() <= 500, hint
    available = window.screen().availableGeometry()
    assert available.contains(window.frameGeometry())


def test_at_200_percent_on_1600x1000_the_window_opens_inside_the_screen(tmp_path):
    """A fresh Qt with QT_SCALE_FACTOR=2 on an offscreen 1600x1000 monitor."""
    config = tmp_path / "screen.json"
    config.write_text(json.dumps({"screens": [{"name": "test", "x": 0, "y": 0, "width": 1600, "height": 1000,
                                               "logicalDpi": 96, "logicalBpi": 96, "dpr": 1}]}))
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from PySide6.QtWidgets import QApplication
        app = QApplication(sys.argv[:1])
        from edgevl.gui.app import create_window
        window = create_window(Path({str(tmp_path / "data")!r}))
        window.show()
        app.processEvents()
        geometry, screen = window.frameGeometry(), window.screen().availableGeometry()
        run = window.run_button.mapTo(window, window.run_button.rect().bottomRight())
        print(json.dumps([screen.width(), screen.height(), geometry.x(), geometry.y(), geometry.width(),
                          geometry.height(), run.x(), run.y(), window.width(), window.height()]))
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": f"offscreen:configfile={config}", "QT_SCALE_FACTOR": "2",
           "EDGEVL_MODELS": str(tmp_path / "models")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    screen_w, screen_h, x, y, width, height, run_x, run_y, inner_w, inner_h = json.loads(done.stdout.splitlines()[-1])
    assert (screen_w, screen_h) == (800, 500)  # logical pixels at 200 %
    assert x >= 0 and y >= 0 and x + width <= screen_w and y + height <= screen_h
    assert run_x <= inner_w and run_y <= inner_h  # Run is inside the window, not cut off


def test_a_saved_window_larger_than_the_screen_is_pulled_back(qtbot, data_dir, models_folder):
    first = open_window(qtbot, data_dir)
    first.resize(3000, 2000)
    first.move(-500, -400)
    first.close()
    second = open_window(qtbot, data_dir)
    assert second.screen().availableGeometry().contains(second.frameGeometry())


# ---- 2. results per image and task --------------------------------------------------------------------------

def test_a_second_task_keeps_the_first_tasks_result(qtbot, window):
    item = read(qtbot, window, "ocr", render_table(CELLS))
    ocr_text = item.outcomes["ocr"].result.text
    choose_task(window, "table")
    window.run_button.click()
    wait_until_idle(qtbot, window)
    assert [(o.task, o.state) for o in item.outcomes.values()] == [("ocr", "done"), ("table", "done")]
    assert window.result_view.is_table and window.result_tasks.isVisible()
    assert item.outcomes["ocr"].result.text == ocr_text  # not wiped
    window.result_tasks.tabBarClicked.emit(0)  # the user switches back to the OCR result
    assert window.task.currentData() == "ocr"
    assert answer_text(window) == ocr_text
    assert "Text (OCR): done" in window.queue.item(0).text() and "Table: done" in window.queue.item(0).text()


def test_an_image_without_a_result_for_the_chosen_task_says_press_run(qtbot, window):
    read(qtbot, window, "ocr")
    choose_task(window, "table")
    placeholder = window.result_view.text.placeholderText()
    assert "press Run" in placeholder and "Table" in placeholder
    assert "drop or paste" not in placeholder  # not the empty-start text: an image is loaded


# ---- 3. History is its own view -------------------------------------------------------------------------------

def test_history_has_its_own_selection_and_run_stays_with_the_queue(qtbot, slow_window):
    window = slow_window
    window.history.add("ocr", "engine", "old.png", "old text", render_text(["old"]))
    window.history_view.reload()
    window.add_image(render_text(["new"]), "new.png")
    qtbot.waitUntil(lambda: "tick" in answer_text(window), timeout=TIMEOUT_MS)
    window.cancel()
    wait_until_idle(qtbot, window)

    window.show_history()
    history = window.history_view
    history.list.setCurrentItem(history.list.topLevelItem(0))
    assert history.result_view.copy_text() == "old text"
    window.run_button.click()  # Run belongs to the queue's selection
    qtbot.waitUntil(lambda: window.job is not None, timeout=TIMEOUT_MS)
    assert window.queue.queue_items()[0].state == "running"
    assert history.result_view.copy_text() == "old text"  # the history pane is untouched
    assert history.list.currentItem() is history.list.topLevelItem(0)


# ---- 4. table edits are saved ---------------------------------------------------------------------------------

def test_a_table_edit_in_the_queue_is_saved_to_history(qtbot, data_dir, models_folder):
    first = open_window(qtbot, data_dir)
    read(qtbot, first, "table", render_table(CELLS))
    first.result_view.grid.item(1, 0).setText("Plums")
    qtbot.waitUntil(lambda: "Plums" in first.history.entries()[0].answer, timeout=TIMEOUT_MS)
    first.close()

    second = open_window(qtbot, data_dir)
    history = second.history_view
    history.list.setCurrentItem(history.list.topLevelItem(0))
    assert history.result_view.grid.item(1, 0).text() == "Plums"
    assert "Plums" in history.list.topLevelItem(0).text(2) or history.result_view.is_table


def test_an_edit_in_the_history_view_is_kept(qtbot, window):
    window.history.add("ocr", "engine", "a.png", "Totl 12", render_text(["x"]))
    window.history_view.reload()
    history = window.history_view
    history.list.setCurrentItem(history.list.topLevelItem(0))
    history.result_view.text.setPlainText("Total 12")
    history.result_view.flush_edits()  # as when the user moves on
    assert window.history.entries()[0].restore().text == "Total 12"
    assert history.list.topLevelItem(0).text(2) == "Total 12"


# ---- 5. tasks that need a vision-language model ---------------------------------------------------------------

def test_caption_and_ask_are_not_offered_without_a_vision_model(qtbot, window):
    items = window.task.model()
    enabled = {window.task.itemData(i): items.item(i).isEnabled() for i in range(window.task.count())}
    assert enabled == {"ocr": True, "table": True, "caption": False, "ask": False, "extract": False}
    caption = window.task.findData("caption")
    assert "model manager" in items.item(caption).toolTip()
    assert not window.task_actions.actions()[caption].isEnabled()


def test_a_task_the_engine_cannot_do_points_to_the_model_manager(qtbot, data_dir, models_folder, monkeypatch):
    window = open_window(qtbot, data_dir, host=EngineHost(tasks_of=lambda choice: Engine.tasks))
    opened = []
    monkeypatch.setattr(window, "open_model_manager", lambda: opened.append(True))
    window.error_banner.show_message("x")  # replaced by the real message below
    item = read(qtbot, window, "caption")
    assert item.state == "failed"
    message = window.error_banner.text()
    assert message.startswith("Caption needs a vision-language model") and "model manager" in message
    assert "edgevl convert" not in message and "--model" not in message
    window.error_banner.action_button.click()
    assert opened


# ---- 6. keyboard-only use ---------------------------------------------------------------------------------------

def test_the_menu_bar_has_mnemonics_and_reaches_everything(qtbot, window):
    menus = {action.text(): action.menu() for action in window.menuBar().actions()}
    assert list(menus) == ["&File", "&Edit", "&Task", "&Models", "&Help"]
    entries = {action.text() for menu in menus.values() for action in menu.actions() if not action.isSeparator()}
    for needed in ("&Manage models...", "&Settings...", "&Quit", "Capture to &clipboard", "&Export all...",
                   "Add &folder...", "&Read me", "&About edgevl", "&Run"):
        assert needed in entries
    for menu in menus.values():
        for action in menu.actions():
            assert action.isSeparator() or "&" in action.text(), action.text()
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    assert window.models_action.shortcut().toString() == "Ctrl+M"


def test_ctrl_q_quits(qtbot, window):
    with qtbot.waitSignal(window.quit_requested, timeout=TIMEOUT_MS):
        press(qtbot, window.result_view.text, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)


def test_ctrl_2_chooses_the_table_task(qtbot, window):
    press(qtbot, window.queue, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.task.currentData() == "table"


def test_tab_in_the_result_box_moves_the_focus(qtbot, window):
    read(qtbot, window, "ocr")
    text = window.result_view.text
    text.setFocus()
    qtbot.waitUntil(text.hasFocus, timeout=TIMEOUT_MS)
    before = text.toPlainText()
    press(qtbot, text, Qt.Key.Key_Tab)
    assert text.toPlainText() == before and not text.hasFocus()


def test_ctrl_v_in_the_table_grid_pastes_into_the_cells(qtbot, window):
    read(qtbot, window, "table", render_table(CELLS))
    grid = window.result_view.grid
    grid.setCurrentCell(1, 0)
    grid.setFocus()
    QGuiApplication.clipboard().setText("Plums\t20")
    press(qtbot, grid, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert [grid.item(1, c).text() for c in range(3)] == ["Plums", "20", "0.85"]
    assert len(window.queue.queue_items()) == 1  # no image was pasted into the queue


def test_task_and_model_boxes_have_keyboard_labels(qtbot, window):
    from PySide6.QtWidgets import QLabel

    buddies = {label.buddy(): label.text() for label in window.findChildren(QLabel) if label.buddy() is not None}
    assert buddies[window.task] == "Tas&k:" and buddies[window.model] == "Mo&del:"


def test_no_two_places_share_an_alt_key(qtbot, window):
    """Alt+letter of the menu bar, the view tabs and the task bar's labels each lead to one place."""
    from PySide6.QtWidgets import QLabel

    texts = [action.text() for action in window.menuBar().actions()]
    texts += [window.views.tabText(index) for index in range(window.views.count())]
    texts += [label.text() for label in window.findChildren(QLabel) if label.buddy() is not None]
    keys = [text[text.index("&") + 1].lower() for text in texts]
    assert len(keys) == len(set(keys)) == len(texts), texts


# ---- 8. History readable in Chinese and at small widths ----------------------------------------------------------

def test_history_rows_show_their_text_in_chinese_on_a_narrow_window(qtbot, data_dir, models_folder):
    try:
        set_language("zh_CN")
        window = open_window(qtbot, data_dir)
        window.history.add("table", "engine", "b.png", "| 名称 | 数量 |\n|---|---|\n| 苹果 | 3 |", render_text(["x"]))
        window.history_view.reload()
    finally:
        set_language("en")
    window.resize(800, 500)
    window.show_history()
    qtbot.wait(50)
    row = window.history_view.list.topLevelItem(0)
    assert row.text(1) == "表格" and row.text(2).startswith("名称")
    assert window.history_view.list.columnWidth(2) >= 150  # room for the text, not only date and task


# ---- 9. progress, dismissible errors, window place ---------------------------------------------------------------

def test_a_busy_bar_and_the_file_name_show_while_an_image_is_read(qtbot, slow_window):
    window = slow_window
    window.add_image(render_text(["x"]), "scan.png")
    qtbot.waitUntil(lambda: window.job is not None, timeout=TIMEOUT_MS)
    assert window.progress.isVisible() and window.progress.maximum() == 0  # busy
    assert "scan.png" in window.statusBar().currentMessage()
    window.cancel()
    wait_until_idle(qtbot, window)
    assert not window.progress.isVisible()


def test_the_error_banner_can_be_dismissed(qtbot, window):
    window.run_current()  # nothing queued: an error
    assert window.error_banner.isVisible()
    window.error_banner.close_button.click()
    assert not window.error_banner.isVisible()


def test_window_size_and_place_come_back(qtbot, data_dir, models_folder):
    first = open_window(qtbot, data_dir)
    first.resize(700, 450)
    first.move(20, 30)
    qtbot.wait(20)
    size, position = first.size(), first.pos()
    first.close()
    second = open_window(qtbot, data_dir)
    assert second.size() == size and second.pos() == position


# ---- layout modes ---------------------------------------------------------------------------------------------

def test_the_layout_mode_reaches_the_library(qtbot, window, monkeypatch):
    calls = []
    real = engine_host.api.stream_task

    def recording(engine, task, images, **options):
        calls.append(dict(options))
        options.pop("layout", None)  # the library learns `layout` in a parallel change
        return real(engine, task, images, **options)

    monkeypatch.setattr(engine_host.api, "stream_task", recording)
    assert [window.layout_mode.itemText(i) for i in range(3)] == ["Lines", "Paragraphs", "Raw"]
    window.layout_mode.setCurrentIndex(window.layout_mode.findData("paragraphs"))
    read(qtbot, window, "ocr")
    window.layout_mode.setCurrentIndex(window.layout_mode.findData("auto"))
    window.run_button.click()
    wait_until_idle(qtbot, window)
    assert calls[0]["layout"] == "paragraphs" and "layout" not in calls[1]  # auto: the library's default
    assert window.settings.layout == "auto"
    choose_task(window, "table")
    assert not window.layout_mode.isVisible()


# ---- batch from a folder ---------------------------------------------------------------------------------------

def test_a_folder_runs_as_a_batch_with_progress_and_exports_all(qtbot, window, tmp_path):
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    render_text(LINES[:1]).save(folder / "a.png")
    render_text(LINES[1:]).save(folder / "sub" / "b.png")
    (folder / "broken.png").write_bytes(b"not a png")
    item = window.add_folder(folder)
    progress = []
    window.job.signals.progress.connect(lambda event: progress.append(event[0]))
    wait_until_idle(qtbot, window)
    outcome = item.outcomes["ocr"]
    assert outcome.state == "done" and progress[0] == "start" and progress.count("record") == 3
    assert sorted(record["path"].rsplit("/", 1)[1] for record in outcome.records) == ["a.png", "b.png", "broken.png"]
    assert "Invoice" in answer_text(window)
    assert list((window.data_dir / "batches").glob("*-ocr.jsonl"))  # the library's resumable output file

    window.add_image(render_text(["single"]), "single.png")
    wait_until_idle(qtbot, window)
    for fmt in ("txt", "jsonl", "md", "csv"):
        window.export_all(tmp_path / f"all.{fmt}", fmt)
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["path"] == "single.png"
    assert "## a.png" in (tmp_path / "all.md").read_text()
    assert (tmp_path / "all.csv").read_text().startswith("path,task,output,error\n")
    assert "==> single.png <==" in (tmp_path / "all.txt").read_text()


def test_a_folder_without_images_says_so(qtbot, window, tmp_path):
    assert window.add_folder(tmp_path) is None
    assert "No images in" in window.error_banner.text()


def test_export_all_with_nothing_done_says_so(qtbot, window):
    window.ask_to_export_all()
    assert "Nothing to export" in window.error_banner.text()


# ---- help -----------------------------------------------------------------------------------------------------

def test_about_shows_versions_and_the_engine_in_use(qtbot, window):
    from edgevl.gui.widgets.help_dialogs import AboutDialog, ReadmeDialog

    read(qtbot, window, "ocr")
    about = AboutDialog(window.host.summary, window.model.currentText(), window)
    qtbot.addWidget(about)
    text = about.text.text()
    assert "RapidOCR" in text and "PySide6" in text and "Qt" in text and "edgevl" in text
    readme = ReadmeDialog(window)
    qtbot.addWidget(readme)
    assert "edgevl" in readme.browser.toPlainText()


# ---- 10. the model manager ----------------------------------------------------------------------------------

def test_an_empty_models_folder_shows_what_to_do(qtbot, window):
    from edgevl.gui.widgets.model_manager import ModelManager

    manager = ModelManager(window.host, window)
    qtbot.addWidget(manager)
    assert manager.list_or_hint.currentWidget() is manager.empty_hint
    assert "No models yet" in manager.empty_hint.text()


def test_quants_come_with_sizes_and_memory_advice_from_the_model_cards(qtbot, window):
    from edgevl.gui.widgets.model_manager import ModelManager, quant_advice

    advice = dict(quant_advice("q4_k_m", ram_bytes=4 * 10**9))
    assert "Qwen2-VL-2B-Instruct: 2.3 GB of files, about 4 GB of memory" in advice
    assert advice["Qwen2-VL-2B-Instruct: 2.3 GB of files, about 4 GB of memory"]
    too_big = [line for line, fits in advice.items() if not fits]
    assert too_big and all("more than this computer has (4 GB)" in line for line in too_big)
    manager = ModelManager(window.host, window)
    qtbot.addWidget(manager)
    if manager.quant.count():  # the converter is installed
        manager.quant.setCurrentIndex(manager.quant.findData("gguf:q4_k_m"))
        assert "Qwen2-VL-2B-Instruct" in manager.quant_advice.text()


def test_conversion_errors_are_specific_and_highlighted(qtbot, window, tmp_path, monkeypatch):
    from edgevl.gui.widgets import model_manager

    manager = model_manager.ModelManager(window.host, window)
    qtbot.addWidget(manager)
    manager.checkpoint.setText(str(tmp_path / "nowhere"))
    manager._convert_clicked()
    assert manager.step_label.text() == f"The folder {tmp_path / 'nowhere'} does not exist."
    assert "#fde2e1" in manager.step_label.styleSheet()

    monkeypatch.setattr(model_manager.api, "conversion_choices", lambda: [])
    without = model_manager.ModelManager(window.host, window)
    qtbot.addWidget(without)
    assert "no converter" in without.step_label.text() and "pip" not in without.step_label.text()
