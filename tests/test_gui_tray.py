"""The tray-resident app (issue 14, defect 7): closing hides to the tray, "Capture to clipboard" from the tray, the
window and `edgevl-gui --capture` puts the text on the clipboard with a notification and leaves the window where
it was; the overlay says what to do and how large the region is; the tray menu promises no shortcuts."""

from __future__ import annotations

import argparse
import difflib

import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QSystemTrayIcon

from edgevl.gui import app
from edgevl.gui.settings import SETTINGS_FILE, Settings
from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, FakeScreenshots, data_dir, models_folder, open_window, wait_until_idle,
)
from edgevl.gui.tray import create_tray
from edgevl.drawing import render_text

pytestmark = pytest.mark.gui

LINES = ["Meeting notes, 12 March", "Ship the desktop app on Friday"]
TEXT_AT = (120, 140)


@pytest.fixture
def screen() -> Image.Image:
    size = QGuiApplication.primaryScreen().geometry().size()
    image = Image.new("RGB", (size.width(), size.height()), "white")
    image.paste(render_text(LINES), TEXT_AT)
    return image


@pytest.fixture
def with_tray(monkeypatch):
    """A desktop with a system tray (the offscreen platform has none)."""
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


@pytest.fixture
def tray_window(qtbot, data_dir, models_folder, screen, with_tray):
    window = open_window(qtbot, data_dir, screenshot_handlers=[FakeScreenshots(screen)])
    create_tray(window)
    yield window
    window._quitting = True  # let the fixture's close really close


def notifications(window) -> list[tuple[str, str]]:
    received: list[tuple[str, str]] = []
    window.notification.connect(lambda title, message: received.append((title, message)))
    return received


def drag_over_text(qtbot, window) -> None:
    qtbot.waitUntil(lambda: bool(window.capture.overlays), timeout=TIMEOUT_MS)
    overlay = window.capture.overlays[0]
    qtbot.waitExposed(overlay)
    text = render_text(LINES)
    left, top = TEXT_AT
    start, end = QPoint(left - 8, top - 8), QPoint(left + text.width + 8, top + text.height + 8)
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(overlay, end)
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=end)


def clipboard_has_the_text() -> bool:
    return difflib.SequenceMatcher(None, "\n".join(LINES), QGuiApplication.clipboard().text()).ratio() >= 0.98


def test_closing_the_window_keeps_the_app_in_the_tray(qtbot, tray_window):
    received = notifications(tray_window)
    assert tray_window.close() is False  # the close was turned into a hide
    assert not tray_window.isVisible() and tray_window.history is not None
    assert received and received[0][0] == "edgevl keeps running"
    with qtbot.waitSignal(tray_window.quit_requested, timeout=TIMEOUT_MS):
        tray_window.quit_action.trigger()


def test_with_the_setting_off_closing_quits(qtbot, data_dir, models_folder, with_tray):
    Settings(close_to_tray=False).save(data_dir / SETTINGS_FILE)
    window = open_window(qtbot, data_dir)
    create_tray(window)
    assert window.close() is True


def test_capture_to_clipboard_from_the_tray_leaves_the_window_hidden(qtbot, tray_window):
    received = notifications(tray_window)
    tray_window.close()  # in the tray
    QGuiApplication.clipboard().setText("")
    menu = {action.text(): action for action in tray_window.tray.contextMenu().actions()}
    menu["Capture to clipboard"].trigger()
    drag_over_text(qtbot, tray_window)
    wait_until_idle(qtbot, tray_window)
    qtbot.waitUntil(clipboard_has_the_text, timeout=TIMEOUT_MS)
    assert ("Copied to the clipboard", LINES[0]) in received  # the first line, in a notification
    assert not tray_window.isVisible()


def test_capture_to_clipboard_from_the_window_does_not_raise_it(qtbot, tray_window, monkeypatch):
    raised = []
    monkeypatch.setattr(tray_window, "raise_", lambda: raised.append(True))
    QGuiApplication.clipboard().setText("")
    tray_window.capture_to_clipboard_action.trigger()
    drag_over_text(qtbot, tray_window)
    qtbot.waitUntil(clipboard_has_the_text, timeout=TIMEOUT_MS)
    assert tray_window.isVisible() and not raised


def test_a_plain_capture_copies_its_text_by_default(qtbot, tray_window):
    assert tray_window.settings.copy_captures
    QGuiApplication.clipboard().setText("")
    tray_window.capture_action.trigger()
    drag_over_text(qtbot, tray_window)
    qtbot.waitUntil(clipboard_has_the_text, timeout=TIMEOUT_MS)


def test_the_tray_menu_promises_no_shortcuts(qtbot, tray_window):
    actions = [action for action in tray_window.tray.contextMenu().actions() if not action.isSeparator()]
    assert [action.text() for action in actions] == ["Capture to clipboard", "Capture region", "Capture again",
                                                     "Show window", "Quit"]
    assert all(action.shortcut().isEmpty() for action in actions)


def test_edgevl_gui_capture_starts_in_the_tray_and_copies(qtbot, data_dir, models_folder, screen, with_tray):
    args = argparse.Namespace(capture=True, data_dir=data_dir)
    window = app.start(args, server_name="edgevl-gui-test-capture", screenshot_handlers=[FakeScreenshots(screen)])
    qtbot.addWidget(window)
    received = notifications(window)
    QGuiApplication.clipboard().setText("")
    drag_over_text(qtbot, window)
    qtbot.waitUntil(clipboard_has_the_text, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(received), timeout=TIMEOUT_MS)
    assert received[-1] == ("Copied to the clipboard", LINES[0])
    assert not window.isVisible()  # never shown: a cold start bound to a key stays out of the way

    app._on_message(window, "capture")  # a second `edgevl-gui --capture` reaches this app
    qtbot.waitUntil(lambda: bool(window.capture.overlays), timeout=TIMEOUT_MS)
    window.capture.overlays[0].cancelled.emit()
    assert not window.isVisible()
    window._quitting = True
    QGuiApplication.instance().setQuitOnLastWindowClosed(True)


def test_the_overlay_says_what_to_do_and_shows_the_size(qtbot, tray_window):
    tray_window.capture_action.trigger()
    qtbot.waitUntil(lambda: bool(tray_window.capture.overlays), timeout=TIMEOUT_MS)
    overlay = tray_window.capture.overlays[0]
    qtbot.waitExposed(overlay)
    assert "Esc" in overlay.hint and overlay.size_text() == ""
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    qtbot.mouseMove(overlay, QPoint(130, 50))
    assert overlay.size_text() == "120 \u00d7 40"
    overlay.grab()  # paints the hint and the size label without error
    qtbot.keyClick(overlay, Qt.Key.Key_Escape)
