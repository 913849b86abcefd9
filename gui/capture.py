"""Capturing a screen region: hide the app, screenshot every monitor, let the user drag a rectangle on an
overlay per monitor, hand the cropped region over as a Pillow image, show the app again.

Qt only allows screen grabs on the GUI thread, so the grab happens there, while the app's window is hidden;
it takes a few milliseconds. Everything after it (recognition) runs in the engine host's worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, QRect, QTimer, Signal
from PySide6.QtWidgets import QWidget

from edgevl.gui.i18n import tr
from edgevl.gui.imaging import from_qimage
from edgevl.gui.screenshot import HANDLERS, Screenshot, ScreenshotError, ScreenshotHandler, capture_screens
from edgevl.gui.widgets.region_overlay import RegionOverlay

#: Time for the compositor to take the hidden window off the screen before the screenshot.
HIDE_DELAY_MS = 250


class CaptureController(QObject):
    captured = Signal(object, bool)  # Pillow image of the region; True for "capture to clipboard"
    failed = Signal(str)

    def __init__(self, window: QWidget, handlers: Sequence[ScreenshotHandler] = HANDLERS) -> None:
        super().__init__(window)
        self._window = window
        self._handlers = handlers
        self._overlays: list[RegionOverlay] = []
        self._to_clipboard = False
        self._window_was_visible = True  # a window hidden in the tray stays hidden after a capture
        #: (monitor index, region in its screenshot's pixels) of the last capture, for "capture again"
        self.last_region: tuple[int, QRect] | None = None

    @property
    def overlays(self) -> list[RegionOverlay]:
        return self._overlays

    def select_region(self, to_clipboard: bool = False) -> None:
        """Hide the window, then show the region picker over every monitor. `to_clipboard`: the text goes to the
        clipboard and the window is not brought forward afterwards."""
        self._hide_then(self._open_overlays, to_clipboard)

    def capture_again(self) -> None:
        """The region of the last capture, from fresh screenshots, without asking."""
        if self.last_region is None:
            self.failed.emit(tr("Nothing to capture again yet: capture a region first."))
            return
        self._hide_then(self._recapture, to_clipboard=False)

    def _hide_then(self, step, to_clipboard: bool) -> None:
        if self._overlays:  # already picking
            return
        self._to_clipboard = to_clipboard
        self._window_was_visible = self._window.isVisible()
        self._window.hide()
        QTimer.singleShot(HIDE_DELAY_MS, step)

    def _open_overlays(self) -> None:
        screenshots = self._screenshots()
        if screenshots is None:
            return
        for index, screenshot in enumerate(screenshots):
            overlay = RegionOverlay(screenshot)
            overlay.selected.connect(lambda region, i=index, shot=screenshot: self._on_selected(i, shot, region))
            overlay.cancelled.connect(self._end)
            self._overlays.append(overlay)
            overlay.open()

    def _recapture(self) -> None:
        screenshots = self._screenshots()
        if screenshots is None or self.last_region is None:
            return
        index, region = self.last_region
        if index >= len(screenshots):
            self._end(tr("The monitor of the last capture is gone; capture a region first."))
            return
        self._on_selected(index, screenshots[index], region)

    def _screenshots(self) -> list[Screenshot] | None:
        try:
            return capture_screens(self._handlers)
        except ScreenshotError as error:
            self._end(str(error))
            return None

    def _on_selected(self, index: int, screenshot: Screenshot, region: QRect) -> None:
        region = region.intersected(screenshot.image.rect())
        if region.isEmpty():  # a remembered region of a monitor that has shrunk since
            self._end(tr("The monitor of the last capture is gone; capture a region first."))
            return
        self.last_region = (index, region)
        image = from_qimage(screenshot.image.copy(region))
        self._end()
        self.captured.emit(image, self._to_clipboard)

    def _end(self, error: str = "") -> None:
        for overlay in self._overlays:
            overlay.close()
        self._overlays = []
        if self._window_was_visible:
            self._window.show()
            if not self._to_clipboard:
                self._window.raise_()
                self._window.activateWindow()
        if error:
            self.failed.emit(error)
