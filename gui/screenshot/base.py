"""What a screenshot handler is: a way to grab every monitor that works on some desktops and not others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PySide6.QtCore import QRect
from PySide6.QtGui import QImage


class ScreenshotError(Exception):
    """No handler could take the screenshot; the message says why in plain words."""


@dataclass(frozen=True)
class Screenshot:
    """One monitor: its picture (in device pixels) and where the monitor sits on the desktop (logical pixels)."""

    image: QImage
    geometry: QRect


class ScreenshotHandler(Protocol):
    name: str

    def is_compatible(self) -> bool:
        """Can this way of taking screenshots work on the running desktop (X11, Wayland, Windows...)?"""

    def is_installed(self) -> bool:
        """Is the tool it needs present?"""

    def capture(self) -> list[Screenshot]:
        """One screenshot per monitor, in the order of QGuiApplication.screens(). Raises ScreenshotError."""
