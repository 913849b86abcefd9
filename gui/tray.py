"""The tray icon: capture without opening the window first (where the desktop has a tray)."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from edgevl.gui.i18n import tr
from edgevl.gui.widgets.main_window import MainWindow


def create_tray(window: MainWindow) -> QSystemTrayIcon | None:
    if not QSystemTrayIcon.isSystemTrayAvailable():
        return None
    menu = QMenu(window)
    menu.addAction(window.capture_action)
    menu.addAction(window.capture_again_action)
    menu.addSeparator()
    menu.addAction(tr("Show window"), lambda: bring_to_front(window))
    menu.addAction(tr("Quit"), QApplication.quit)
    tray = QSystemTrayIcon(window.windowIcon(), window)
    tray.setToolTip("edgevl")
    tray.setContextMenu(menu)
    tray.activated.connect(lambda reason: reason == QSystemTrayIcon.ActivationReason.Trigger and bring_to_front(window))
    tray.show()
    return tray


def bring_to_front(window: MainWindow) -> None:
    window.showNormal()
    window.raise_()
    window.activateWindow()
