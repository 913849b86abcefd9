"""The region picker: a frameless full-screen window over one monitor showing that monitor's screenshot,
dimmed everywhere except the rectangle the user drags. A line at the top says what to do; the size of the
rectangle (in screenshot pixels) shows next to it while dragging. Esc or the right mouse button cancels."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from edgevl.gui.i18n import tr
from edgevl.gui.screenshot import Screenshot

#: Drags smaller than this (in logical pixels) are taken as stray clicks, not as a region.
MIN_SIZE = 4
DIM = QColor(0, 0, 0, 110)
LABEL_BACKGROUND = QColor(0, 0, 0, 190)
SELECTION = QColor(0, 150, 255)


class RegionOverlay(QWidget):
    selected = Signal(QRect)  # the region in screenshot pixels
    cancelled = Signal()

    def __init__(self, screenshot: Screenshot) -> None:
        super().__init__(None, Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint)
        self._screenshot = screenshot
        self._pixmap = QPixmap.fromImage(screenshot.image)
        self._origin: QPoint | None = None
        self._selection = QRect()
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.hint = tr("Drag over the text to read. Esc or right-click cancels.")

    def open(self) -> None:
        """Cover the screenshot's monitor."""
        screen = QGuiApplication.screenAt(self._screenshot.geometry.center())
        if screen is not None:
            self.setScreen(screen)
        self.setGeometry(self._screenshot.geometry)
        self.showFullScreen()
        self.raise_()
        self.activateWindow()

    @property
    def selection(self) -> QRect:
        """The rectangle dragged so far, in this window's logical pixels."""
        return self._selection

    def size_text(self) -> str:
        """The selection's size in screenshot pixels, e.g. "320 × 80" ("" before a drag)."""
        if not self._selection.isValid():
            return ""
        region = self._in_screenshot_pixels(self._selection)
        return f"{region.width()} \u00d7 {region.height()}"

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.drawPixmap(self.rect(), self._pixmap)
        outside = self.rect()
        painter.setClipRegion(self.visibleRegion().subtracted(self._selection) if self._selection.isValid()
                              else outside)
        painter.fillRect(outside, DIM)
        painter.setClipping(False)
        if self._selection.isValid():
            painter.setPen(QPen(SELECTION, 2))
            painter.drawRect(self._selection.adjusted(0, 0, -1, -1))
            below = self._selection.bottomLeft() + QPoint(0, 6)
            self._draw_label(painter, self.size_text(), below)
        hint_width = painter.fontMetrics().horizontalAdvance(self.hint) + 24
        self._draw_label(painter, self.hint, QPoint((self.width() - hint_width) // 2, 16))

    def _draw_label(self, painter: QPainter, text: str, top_left: QPoint) -> None:
        """Light text on a dark rounded box, readable on any screenshot."""
        metrics = painter.fontMetrics()
        box = QRect(top_left, metrics.size(0, text)).adjusted(0, 0, 24, 12)
        box.moveTop(min(box.top(), self.height() - box.height()))  # a selection at the bottom: label stays visible
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(LABEL_BACKGROUND)
        painter.drawRoundedRect(box, 6, 6)
        painter.setPen(QColor("white"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            self.cancelled.emit()
        elif event.button() == Qt.MouseButton.LeftButton:
            self._origin = event.position().toPoint()
            self._selection = QRect()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._origin is not None:
            self._selection = _span(self._origin, event.position().toPoint())
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._origin is None or event.button() != Qt.MouseButton.LeftButton:
            return
        self._selection = _span(self._origin, event.position().toPoint())
        self._origin = None
        if self._selection.width() < MIN_SIZE or self._selection.height() < MIN_SIZE:
            self._selection = QRect()
            self.update()
            return
        self.selected.emit(self._in_screenshot_pixels(self._selection))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()

    def _in_screenshot_pixels(self, rect: QRect) -> QRect:
        """Logical window pixels to the screenshot's device pixels (they differ on high-DPI monitors)."""
        image = self._screenshot.image
        scale_x, scale_y = image.width() / max(1, self.width()), image.height() / max(1, self.height())
        return QRect(round(rect.x() * scale_x), round(rect.y() * scale_y),
                     round(rect.width() * scale_x), round(rect.height() * scale_y)).intersected(image.rect())


def _span(start: QPoint, end: QPoint) -> QRect:
    """The rectangle between two drag points, as wide as the drag (QRect(start, end) adds a pixel)."""
    return QRectF(start.toPointF(), end.toPointF()).normalized().toRect()
