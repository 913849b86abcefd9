"""wl-copy (wl-clipboard): on Wayland, an app without keyboard focus (hidden after a capture, in the tray) may
not set the clipboard itself; wl-copy can, and keeps serving the text after we move on."""

from __future__ import annotations

import os
import shutil
import subprocess


class WlCopyHandler:
    name = "wl-copy"

    def is_compatible(self) -> bool:
        return bool(os.environ.get("WAYLAND_DISPLAY"))

    def is_installed(self) -> bool:
        return shutil.which("wl-copy") is not None

    def copy(self, text: str) -> None:
        subprocess.run(["wl-copy"], input=text.encode("utf-8"), check=True, timeout=5)
