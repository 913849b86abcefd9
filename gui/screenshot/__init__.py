"""Screenshots of every monitor, by the first handler that works on this desktop.

Handlers are tried in order; each says whether it fits the desktop (`is_compatible`) and whether its tool is
present (`is_installed`). GNOME and KDE on Wayland allow screenshots only through the xdg-desktop-portal, which
asks the user itself; that handler is not written yet (see gui/adr/001-global-shortcut.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edgevl.gui.i18n import tr
from edgevl.gui.screenshot.base import Screenshot, ScreenshotError, ScreenshotHandler
from edgevl.gui.screenshot.grim import GrimHandler
from edgevl.gui.screenshot.qt import QtScreenHandler

log = logging.getLogger(__name__)

HANDLERS: tuple[ScreenshotHandler, ...] = (QtScreenHandler(), GrimHandler())


def capture_screens(handlers: Sequence[ScreenshotHandler] = HANDLERS) -> list[Screenshot]:
    """One screenshot per monitor; ScreenshotError with every handler's reason when none works."""
    reasons = []
    for handler in handlers:
        if not handler.is_compatible():
            reasons.append(tr("{handler}: not for this desktop", handler=handler.name))
        elif not handler.is_installed():
            reasons.append(tr("{handler}: not installed", handler=handler.name))
        else:
            log.info("screenshots by %s", handler.name)
            return handler.capture()
    raise ScreenshotError(tr("Cannot take screenshots on this desktop ({reasons}).", reasons="; ".join(reasons)))


__all__ = ["HANDLERS", "Screenshot", "ScreenshotError", "ScreenshotHandler", "capture_screens"]
