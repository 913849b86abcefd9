"""Can the desktop app's Qt load its X11 platform plugin here, and if not, which system libraries are missing?

Without them `edgevl-gui` dies with Qt's own message, which on a minimal Debian names `libxcb-cursor0` even when
the libraries really missing are `libxcb-icccm4` and `libxcb-keysyms1`. This check asks the dynamic linker
(`ldd` on the plugin and on Qt's XCB library) instead of guessing, and names the packages for the distribution
in use. Nothing of Qt is imported: it works without a display and costs no start-up time in `edgevl doctor`.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import subprocess
from pathlib import Path
from collections.abc import Iterator

#: soname -> package, per distribution family (the README's "System libraries for the desktop app" lists them).
PACKAGES = {
    "debian": {
        "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
        "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
        "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-shape.so.0": "libxcb-shape0",
        "libxcb-xkb.so.1": "libxcb-xkb1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
        "libxkbcommon.so.0": "libxkbcommon0", "libxcb-randr.so.0": "libxcb-randr0",
        "libxcb-xinerama.so.0": "libxcb-xinerama0", "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1",
        "libfontconfig.so.1": "libfontconfig1", "libdbus-1.so.3": "libdbus-1-3",
    },
    "fedora": {
        "libxcb-cursor.so.0": "xcb-util-cursor", "libxcb-icccm.so.4": "xcb-util-wm",
        "libxcb-keysyms.so.1": "xcb-util-keysyms", "libxcb-image.so.0": "xcb-util-image",
        "libxcb-render-util.so.0": "xcb-util-renderutil", "libxkbcommon-x11.so.0": "libxkbcommon-x11",
        "libxkbcommon.so.0": "libxkbcommon", "libEGL.so.1": "libglvnd-egl", "libGL.so.1": "libglvnd-glx",
        "libfontconfig.so.1": "fontconfig", "libdbus-1.so.3": "dbus-libs",
    },
}
# Arch names the xcb-util packages as Fedora does; only the GL and D-Bus packages differ.
PACKAGES["arch"] = {**PACKAGES["fedora"], "libEGL.so.1": "libglvnd", "libGL.so.1": "libglvnd", "libdbus-1.so.3": "dbus"}
INSTALL = {"debian": "sudo apt-get install", "fedora": "sudo dnf install", "arch": "sudo pacman -S"}


def qt_platform_checks() -> Iterator[tuple[str, bool, str]]:
    """`edgevl doctor` lines: whether the desktop app's X11 plugin would load, else what to install."""
    if platform.system() != "Linux":
        return
    what = "desktop app (Qt xcb plugin)"
    plugin = xcb_plugin()
    if plugin is None:
        yield what, False, "PySide6 is not installed (the gui extra); `edgevl gui` needs it"
        return
    if shutil.which("ldd") is None:
        yield what, True, f"{plugin.name} found; ldd missing, its libraries were not checked"
        return
    missing = sorted({name for library in (plugin, *plugin.parents[2].glob("lib/libQt6XcbQpa.so*"))
                      for name in missing_libraries(_ldd(library))})
    if not missing:
        yield what, True, "every library the X11 platform plugin needs is installed"
        return
    yield what, False, f"missing {', '.join(missing)}: {install_command(missing, distribution())}"


def xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    plugin = Path(spec.origin).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.exists() else None


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ldd reports as "not found"."""
    return re.findall(r"^\s*(\S+) => not found", ldd_output, flags=re.MULTILINE)


def distribution() -> str:
    """debian, fedora or arch (the family of the distribution in use); debian when unknown."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return "debian"
    names = {release.get("ID", ""), *release.get("ID_LIKE", "").split()}
    if names & {"fedora", "rhel", "centos"}:
        return "fedora"
    if "arch" in names:
        return "arch"
    return "debian"


def install_command(missing: list[str], family: str) -> str:
    packages = PACKAGES[family]
    known = sorted({packages[name] for name in missing if name in packages})
    unknown = [name for name in missing if name not in packages]
    command = f"{INSTALL[family]} {' '.join(known)}" if known else ""
    return "; ".join(part for part in (command, " ".join(unknown) and f"also provide {' '.join(unknown)}") if part)


def _ldd(library: Path) -> str:
    try:
        return subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
