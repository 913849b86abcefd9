"""Qt's own screen grab: works on Windows, macOS and X11. Wayland compositors hand it black images, so it
declines there."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

from edgevl.gui.screenshot.base import Screenshot


class QtScreenHandler:
    name = "Qt QScreen.grabWindow"

    def is_compatible(self) -> bool:
        return QGuiApplication.platformName() != "wayland"

    def is_installed(self) -> bool:
        return True

    def capture(self) -> list[Screenshot]:
        # grabWindow must run on the GUI thread (Qt's rule); it takes a few milliseconds per monitor
        return [Screenshot(screen.grabWindow(0).toImage(), screen.geometry()) for screen in QGuiApplication.screens()]
