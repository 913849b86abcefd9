"""What a clipboard handler is: a way to put text on the clipboard that works on some desktops."""

from __future__ import annotations

from typing import Protocol


class ClipboardHandler(Protocol):
    name: str

    def is_compatible(self) -> bool:
        """Can it work on the running desktop?"""

    def is_installed(self) -> bool:
        """Is the tool it needs present?"""

    def copy(self, text: str) -> None:
        """Put `text` on the clipboard; raise OSError (or subprocess.SubprocessError) if that failed."""
