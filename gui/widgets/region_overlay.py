"""The region picker: a frameless full-screen window over one monitor showing that monitor's screenshot,
dimmed everywhere except the rectangle the user drags. Esc or the right mouse button cancels."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from edgevl.gui.screenshot import Screenshot

#: Drags smaller than this (in logical pixels) are taken as stray clicks, not as a region.
MIN_SIZE = 4
DIM = QColor(0, 0, 0, 110)


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

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.drawPixmap(self.rect(), self._pixmap)
        outside = self.rect()
        painter.setClipRegion(self.visibleRegion().subtracted(self._selection) if self._selection.isValid()
                              else outside)
        painter.fillRect(outside, DIM)
        if self._selection.isValid():
            painter.setClipping(False)
            painter.setPen(QPen(QColor(0, 150, 255), 2))
            painter.drawRect(self._selection.adjusted(0, 0, -1, -1))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            self.cancelled.emit()
        elif event.button() == Qt.MouseButton.LeftButton:
            self._origin = event.position().toPoint()
            self._selection = QRect()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._origin is not None:
            self._selection = QRect(self._origin, event.position().toPoint()).normalized()
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._origin is None or event.button() != Qt.MouseButton.LeftButton:
            return
        self._selection = QRect(self._origin, event.position().toPoint()).normalized()
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
