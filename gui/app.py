"""Start-up: arguments, one app per user, language, theme, the main window and the tray icon.

`create_window` is everything between "Qt is up" and "the window can be shown"; the start-up benchmark
(benchmarks/bench_gui_startup.py) times it together with the imports. Nothing heavy happens here: engines
load on the first task, the converter when the model manager converts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from edgevl.gui.arguments import add_gui_arguments, default_data_dir
from edgevl.gui.i18n import install_qt_translations, set_language
from edgevl.gui.instance import SERVER_NAME, InstanceServer, send_to_running_app
from edgevl.gui.settings import SETTINGS_FILE, Settings
from edgevl.gui.theme import apply_theme
from edgevl.gui.tray import bring_to_front, create_tray
from edgevl.gui.widgets.main_window import MainWindow


def main(argv: Sequence[str] | None = None) -> int:
    """The `edgevl-gui` script."""
    parser = argparse.ArgumentParser(prog="edgevl-gui", description="the edgevl desktop app")
    add_gui_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Start the app (or hand the request to the one already running); returns the exit status."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("edgevl")
    QApplication.setDesktopFileName("edgevl")  # Wayland and task bars match the window to packaging/edgevl.desktop
    if send_to_running_app("capture" if args.capture else "show"):
        return 0
    start(args)
    return app.exec()


def start(args: argparse.Namespace, server_name: str = SERVER_NAME, **window_options: Any) -> MainWindow:
    """Everything up to the event loop: the window, the single-instance server, the tray icon. With `--capture`
    the app captures to the clipboard at once and, where there is a tray, stays in it without a window."""
    app = QApplication.instance()
    assert app is not None, "start() runs inside a QApplication"
    window = create_window(args.data_dir or default_data_dir(), **window_options)
    server = InstanceServer(server_name, parent=window)
    server.message.connect(lambda message: _on_message(window, message))
    tray = create_tray(window)
    QApplication.setQuitOnLastWindowClosed(tray is None)
    window.quit_requested.connect(app.quit)
    if tray is None or not args.capture:
        window.show()
    if args.capture:
        QTimer.singleShot(0, window.capture_to_clipboard)
    return window


def create_window(data_dir: Path, **window_options: Any) -> MainWindow:
    """Apply the stored language and theme, then build the main window (not shown yet)."""
    settings = Settings.load(data_dir / SETTINGS_FILE)
    set_language(settings.language)
    app = QApplication.instance()
    assert app is not None, "the window is built inside a QApplication"
    install_qt_translations(app)
    apply_theme(settings.theme)
    return MainWindow(data_dir, settings, **window_options)


def _on_message(window: MainWindow, message: str) -> None:
    if message == "capture":
        window.capture_to_clipboard()
    else:
        bring_to_front(window)
