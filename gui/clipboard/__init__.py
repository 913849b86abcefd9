"""Copying text to the clipboard by the first handler that works on this desktop (pasting images goes through
Qt directly: the app has focus when the user presses Ctrl+V)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

from edgevl.gui.clipboard.base import ClipboardHandler
from edgevl.gui.clipboard.qt import QtClipboardHandler
from edgevl.gui.clipboard.wlcopy import WlCopyHandler

log = logging.getLogger(__name__)

HANDLERS: tuple[ClipboardHandler, ...] = (WlCopyHandler(), QtClipboardHandler())


def copy_text(text: str, handlers: Sequence[ClipboardHandler] = HANDLERS) -> bool:
    """True when a handler copied the text; a handler that fails hands over to the next one."""
    for handler in handlers:
        if not (handler.is_compatible() and handler.is_installed()):
            continue
        try:
            handler.copy(text)
            return True
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("%s could not copy: %s", handler.name, error)
    return False


__all__ = ["HANDLERS", "ClipboardHandler", "copy_text"]
