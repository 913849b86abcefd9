"""The desktop app's main window with the embedded engine: images in, answers streaming, tables out, history,
cancel, errors. Offscreen Qt; select with `pytest -m gui`."""

from __future__ import annotations

import dataclasses
import difflib
import json

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication

from edgevl.gui.engine_host import EngineHost
from edgevl.gui.imaging import to_qimage
from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, SlowEngine, answer_text, data_dir, models_folder, open_window, wait_until_idle, window,
)
from edgevl.drawing import render_table, render_text

pytestmark = pytest.mark.gui

LINES = ["Invoice 2024-117", "Total due: 1,250.00 EUR"]
CELLS = [["Item", "Qty", "Price"], ["Apples", "3", "1.20"], ["Pears", "12", "0.85"]]


def similarity(expected: str, got: str) -> float:
    return difflib.SequenceMatcher(None, expected, got).ratio()


def drop_files(window, paths) -> None:
    """What a drag from a file manager does. The handlers are called directly: outside a real drag (no drag
    manager, offscreen) Qt does not deliver drop events."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    position, action = QPointF(10, 10), Qt.DropAction.CopyAction
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(position, action, mime, buttons, modifiers)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    window.dropEvent(QDropEvent(position, action, mime, buttons, modifiers))


def choose_task(window, task: str) -> None:
    window.task.setCurrentIndex(window.task.findData(task))


def test_dropped_files_are_queued_and_read_in_order(qtbot, window, tmp_path):
    first, second = tmp_path / "first.png", tmp_path / "second.webp"
    render_text(LINES[:1]).save(first)
    render_text(LINES[1:]).save(second)
    drop_files(window, [first, second])
    qtbot.waitUntil(lambda: len(window.queue.queue_items()) == 2, timeout=TIMEOUT_MS)
    wait_until_idle(qtbot, window)
    items = window.queue.queue_items()
    assert [item.source for item in items] == ["first.png", "second.webp"]
    assert [item.state for item in items] == ["done", "done"]
    for item, line in zip(items, LINES):
        assert similarity(line, item.answer.result.text) >= 0.98
    assert window.history_view.list.topLevelItemCount() == 2


def test_pasted_image_is_read_and_the_text_streams_in(qtbot, window):
    pieces = []
    QGuiApplication.clipboard().setImage(to_qimage(render_text(LINES)))
    window.paste_action.trigger()
    qtbot.waitUntil(lambda: window.job is not None, timeout=TIMEOUT_MS)
    window.job.signals.progress.connect(lambda piece: pieces.append(piece))
    wait_until_idle(qtbot, window)
    assert len(pieces) == len(LINES)  # the embedded engine streams line by line
    assert window.queue.queue_items()[0].source == "clipboard"
    assert similarity("\n".join(LINES), answer_text(window)) >= 0.98


def test_table_shows_in_an_editable_grid_and_exports_the_edits(qtbot, window, tmp_path):
    choose_task(window, "table")
    window.add_image(render_table(CELLS), "table.png")
    wait_until_idle(qtbot, window)
    view = window.result_view
    assert view.is_table and view.tabs.currentWidget().isAncestorOf(view.grid)
    assert [view.grid.horizontalHeaderItem(c).text() for c in range(3)] == CELLS[0]
    assert view.grid.item(1, 0).text() == "Pears"

    view.grid.item(1, 0).setText("Plums")  # the user corrects a cell
    assert "| Plums" in view.markdown.toPlainText()
    assert view.rendered("tsv").splitlines() == ["Item\tQty\tPrice", "Apples\t3\t1.20", "Plums\t12\t0.85"]
    exported = {fmt: tmp_path / f"table.{fmt}" for fmt in ("csv", "md", "json", "html")}
    for fmt, path in exported.items():
        view.export(fmt, path)
    assert exported["csv"].read_text() == "Item,Qty,Price\nApples,3,1.20\nPlums,12,0.85\n"
    assert json.loads(exported["json"].read_text())[1] == {"Item": "Plums", "Qty": "12", "Price": "0.85"}
    assert "<td>Plums</td>" in exported["html"].read_text()
    assert exported["md"].read_text().startswith("| Item")

    window.copy_tsv_button.click()
    assert QGuiApplication.clipboard().text() == view.rendered("tsv")


def test_ask_without_a_question_waits_for_one(qtbot, data_dir, models_folder):
    window = open_window(qtbot, data_dir, host=EngineHost(opener=lambda choice: SlowEngine(),
                                                          tasks_of=lambda choice: SlowEngine.tasks))
    choose_task(window, "ask")
    window.add_image(render_text(LINES), "receipt.png")
    assert window.job is None and window.queue.queue_items()[0].state == "waiting"
    assert "question" in window.error_banner.text()


def test_bad_files_give_a_message_and_good_ones_still_run(qtbot, window, tmp_path):
    corrupt, empty, good = tmp_path / "corrupt.png", tmp_path / "empty.jpg", tmp_path / "good.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    empty.write_bytes(b"")
    render_text(LINES[:1]).save(good)
    drop_files(window, [corrupt, empty, good])
    qtbot.waitUntil(window.error_banner.isVisible, timeout=TIMEOUT_MS)
    message = window.error_banner.text()
    assert "corrupt.png" in message and "empty.jpg: the file is empty" in message
    wait_until_idle(qtbot, window)
    assert [item.source for item in window.queue.queue_items()] == ["good.png"]


def test_history_survives_a_restart_and_can_be_cleared(qtbot, data_dir, models_folder):
    first = open_window(qtbot, data_dir)
    choose_task(first, "table")
    first.add_image(render_table(CELLS), "table.png")
    wait_until_idle(qtbot, first)
    first.close()

    second = open_window(qtbot, data_dir)
    assert second.task.currentData() == "table"  # the settings came back too
    history = second.history_view
    assert history.list.topLevelItemCount() == 1
    history.list.setCurrentItem(history.list.topLevelItem(0))
    assert history.result_view.is_table
    assert history.result_view.grid.item(0, 0).text() == "Apples"
    history.clear()
    second.close()

    assert open_window(qtbot, data_dir).history_view.list.topLevelItemCount() == 0


def test_cancel_stops_the_running_job_and_the_waiting_ones(qtbot, data_dir, models_folder):
    engine = SlowEngine()
    window = open_window(qtbot, data_dir, host=EngineHost(opener=lambda choice: engine))
    window.add_image(render_text(["one"]), "one.png")
    window.add_image(render_text(["two"]), "two.png")
    qtbot.waitUntil(lambda: "tick tick tick" in answer_text(window), timeout=TIMEOUT_MS)  # streaming shows
    window.cancel_button.click()
    wait_until_idle(qtbot, window)
    assert [item.state for item in window.queue.queue_items()] == ["cancelled", "cancelled"]
    assert engine.stopped.is_set()  # the engine's generator was closed, not abandoned
    assert window.history_view.list.topLevelItemCount() == 0
    assert window.statusBar().currentMessage() == "Cancelled"

    window.queue.setCurrentRow(1)
    window.run_button.click()  # the engine is still loaded and runs again
    qtbot.waitUntil(lambda: window.job is not None and "tick" in answer_text(window), timeout=TIMEOUT_MS)
    window.cancel()
    wait_until_idle(qtbot, window)
    window.close()
    assert engine.closed


def test_failing_model_load_is_a_message_not_a_crash(qtbot, data_dir, models_folder):
    def broken(choice):
        raise MemoryError("cannot allocate 4 GB")

    window = open_window(qtbot, data_dir, host=EngineHost(opener=broken))
    window.add_image(render_text(LINES), "a.png")
    wait_until_idle(qtbot, window)
    assert "Unexpected error: MemoryError: cannot allocate 4 GB" in window.error_banner.text()


def test_auto_copy_puts_each_result_on_the_clipboard(qtbot, window):
    window.settings.auto_copy = True
    window.add_image(render_text(LINES[:1]), "a.png")
    wait_until_idle(qtbot, window)
    assert similarity(LINES[0], QGuiApplication.clipboard().text()) >= 0.98


def test_settings_dialog_changes_apply_and_persist(qtbot, window, data_dir):
    from edgevl.gui.widgets.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.settings, window)
    qtbot.addWidget(dialog)
    dialog.threads.setValue(3)
    dialog.gpu.setChecked(False)
    dialog.image_tokens.setValue(1024)  # the budget's cost shows where it is chosen
    assert "65 s" in dialog.encode_estimate.text()
    dialog.image_tokens.setValue(0)
    assert dialog.encode_estimate.text() == ""
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    window.apply_settings(dialog.chosen())
    assert window._engine_choice().threads == 3 and not window._engine_choice().gpu
    assert QGuiApplication.palette().window().color().lightness() < 100  # dark, even where Qt has no theme
    stored = json.loads((data_dir / "settings.json").read_text())
    assert stored["threads"] == 3 and stored["theme"] == "dark"
    window.apply_settings(dataclasses.replace(window.settings, theme="system"))
    assert QGuiApplication.palette().window().color().lightness() > 150
