"""Qt's clipboard: works everywhere while the app has a window the desktop considers active."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication


class QtClipboardHandler:
    name = "Qt clipboard"

    def is_compatible(self) -> bool:
        return True

    def is_installed(self) -> bool:
        return True

    def copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
