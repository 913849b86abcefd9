"""grim: the screenshot tool of wlroots Wayland compositors (Sway, Hyprland, river...), one call per monitor."""

from __future__ import annotations

import os
import shutil
import subprocess

from PySide6.QtGui import QGuiApplication, QImage

from edgevl.gui.i18n import tr
from edgevl.gui.screenshot.base import Screenshot, ScreenshotError


class GrimHandler:
    name = "grim"

    def is_compatible(self) -> bool:
        return bool(os.environ.get("WAYLAND_DISPLAY"))

    def is_installed(self) -> bool:
        return shutil.which("grim") is not None

    def capture(self) -> list[Screenshot]:
        # On Wayland Qt names each screen after its output ("eDP-1"), which is what grim's -o wants.
        return [Screenshot(self._grab(screen.name()), screen.geometry()) for screen in QGuiApplication.screens()]

    @staticmethod
    def _grab(output: str) -> QImage:
        try:
            done = subprocess.run(["grim", "-o", output, "-"], capture_output=True, check=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as error:
            raise ScreenshotError(tr("grim could not take a screenshot: {error}", error=error)) from None
        image = QImage.fromData(done.stdout, b"PNG")
        if image.isNull():
            raise ScreenshotError(tr("grim could not take a screenshot: {error}", error="no PNG image"))
        return image
