"""Windows that fit the screen they open on, whatever the scaling (200 % on 1600x1000 leaves 800x500 logical
pixels), and that come back where the user left them."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRect, QSize
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

#: Share of the screen a window takes at most when it opens.
SCREEN_SHARE = 0.9
#: Room for the title bar and borders the window manager adds (not known before the window is shown).
FRAME_ALLOWANCE = QSize(16, 48)


def fit_to_screen(widget: QWidget, preferred: QSize) -> None:
    """Open at `preferred` size, or smaller where the screen is smaller, centred."""
    available = _available(widget)
    size = preferred.boundedTo(QSize(int(available.width() * SCREEN_SHARE), int(available.height() * SCREEN_SHARE)))
    widget.resize(size)  # never below the layout's minimum: Qt enforces that when the window is shown
    frame = widget.frameGeometry()
    frame.moveCenter(available.center())
    widget.move(frame.topLeft())


def restore_geometry(widget: QWidget, saved: str, preferred: QSize) -> None:
    """The size and place saved by `saved_geometry`, pulled back onto the screen (its scaling or size may have
    changed since); `preferred` when nothing was saved."""
    if not saved or not widget.restoreGeometry(QByteArray.fromBase64(saved.encode("ascii"))):
        fit_to_screen(widget, preferred)
        return
    available = _available(widget)
    room = available.size() - FRAME_ALLOWANCE
    if widget.width() > room.width() or widget.height() > room.height():
        fit_to_screen(widget, widget.size())
        return
    frame = widget.frameGeometry()
    if not available.contains(frame):
        frame.moveLeft(min(max(frame.left(), available.left()), available.right() - frame.width() + 1))
        frame.moveTop(min(max(frame.top(), available.top()), available.bottom() - frame.height() + 1))
        widget.move(frame.topLeft())


def saved_geometry(widget: QWidget) -> str:
    return bytes(widget.saveGeometry().toBase64().data()).decode("ascii")


def _available(widget: QWidget) -> QRect:
    screen = widget.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry()
