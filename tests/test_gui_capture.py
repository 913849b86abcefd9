"""End to end through the capture path: a synthetic screenshot is injected as the only monitor, a region is
dragged on the overlay, and the embedded engine reads it (NormCap's test, with its 0.98 similarity)."""

from __future__ import annotations

import difflib

import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication

from edgevl.gui.testing import (  # noqa: F401 - fixtures
    TIMEOUT_MS, FakeScreenshots, answer_text, data_dir, models_folder, open_window, wait_until_idle,
)
from edgevl.drawing import render_text

pytestmark = pytest.mark.gui

LINES = ["Meeting notes, 12 March", "Ship the desktop app on Friday"]
TEXT_AT = (120, 140)  # where the text is drawn on the fake screen


@pytest.fixture
def screen() -> Image.Image:
    """A fake monitor as large as Qt's screen: the wanted text, and other text outside the region."""
    size = QGuiApplication.primaryScreen().geometry().size()
    image = Image.new("RGB", (size.width(), size.height()), "white")
    image.paste(render_text(["Do not read this line"]), (10, 10))
    image.paste(render_text(LINES), TEXT_AT)
    return image


@pytest.fixture
def window(qtbot, data_dir, models_folder, screen):
    return open_window(qtbot, data_dir, screenshot_handlers=[FakeScreenshots(screen)])


def open_overlay(qtbot, window):
    window.capture_action.trigger()
    qtbot.waitUntil(lambda: bool(window.capture.overlays), timeout=TIMEOUT_MS)
    assert not window.isVisible()  # the app hides itself while capturing
    overlay = window.capture.overlays[0]
    qtbot.waitExposed(overlay)
    return overlay


def drag(qtbot, overlay, start: QPoint, end: QPoint) -> None:
    qtbot.mousePress(overlay, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(overlay, end)
    qtbot.mouseRelease(overlay, Qt.MouseButton.LeftButton, pos=end)


def text_region(screen: Image.Image) -> tuple[QPoint, QPoint]:
    text = render_text(LINES)
    left, top = TEXT_AT
    return QPoint(left - 8, top - 8), QPoint(left + text.width + 8, top + text.height + 8)


def test_dragged_region_is_read(qtbot, window, screen):
    overlay = open_overlay(qtbot, window)
    drag(qtbot, overlay, *text_region(screen))
    qtbot.waitUntil(window.isVisible, timeout=TIMEOUT_MS)
    assert not window.capture.overlays
    wait_until_idle(qtbot, window)
    assert window.queue.queue_items()[0].source == "screen region"
    got = answer_text(window)
    assert difflib.SequenceMatcher(None, "\n".join(LINES), got).ratio() >= 0.98, got

    window.capture_again_action.trigger()  # same region, no overlay
    qtbot.waitUntil(lambda: len(window.queue.queue_items()) == 2, timeout=TIMEOUT_MS)
    wait_until_idle(qtbot, window)
    assert answer_text(window) == got


def test_escape_cancels_and_brings_the_window_back(qtbot, window):
    overlay = open_overlay(qtbot, window)
    qtbot.keyClick(overlay, Qt.Key.Key_Escape)
    qtbot.waitUntil(window.isVisible, timeout=TIMEOUT_MS)
    assert not window.capture.overlays and not window.queue.queue_items()


def test_a_click_is_not_a_region(qtbot, window):
    overlay = open_overlay(qtbot, window)
    drag(qtbot, overlay, QPoint(50, 50), QPoint(51, 52))
    assert window.capture.overlays and overlay.selection.isNull()
    qtbot.keyClick(overlay, Qt.Key.Key_Escape)
    qtbot.waitUntil(window.isVisible, timeout=TIMEOUT_MS)


def test_capture_again_before_any_capture_says_so(qtbot, window):
    window.capture_again_action.trigger()
    assert "capture a region first" in window.error_banner.text()
    assert window.isVisible()
