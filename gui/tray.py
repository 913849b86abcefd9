"""The tray icon: the app keeps running there when the window is closed (a setting), captures to the clipboard
without opening the window, and shows the notifications of those captures.

The tray menu has its own entries, without keyboard shortcuts: the window's shortcuts work only while the
window has the focus, so showing them here would promise keys that do nothing (a global key is bound in the
desktop's settings to `edgevl-gui --capture`, see the settings dialog).
"""

from __future__ import annotations

from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from edgevl.gui.i18n import tr
from edgevl.gui.widgets.main_window import MainWindow

NOTIFICATION_MS = 5000


def create_tray(window: MainWindow) -> QSystemTrayIcon | None:
    """The tray icon, or None where the desktop has no tray (then closing the window quits)."""
    if not QSystemTrayIcon.isSystemTrayAvailable():
        return None
    menu = QMenu(window)
    menu.addAction(tr("Capture to clipboard"), window.capture_to_clipboard)
    menu.addAction(tr("Capture region"), window.capture.select_region)
    menu.addAction(tr("Capture again"), window.capture.capture_again)
    menu.addSeparator()
    menu.addAction(tr("Show window"), lambda: bring_to_front(window))
    menu.addAction(tr("Quit"), window.quit)
    tray = QSystemTrayIcon(window.windowIcon(), window)
    tray.setToolTip("edgevl")
    tray.setContextMenu(menu)

    def on_activated(reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            toggle(window)

    tray.activated.connect(on_activated)
    window.notification.connect(
        lambda title, message: tray.showMessage(title, message, window.windowIcon(), NOTIFICATION_MS))
    window.tray = tray
    tray.show()
    return tray


def toggle(window: MainWindow) -> None:
    if window.isVisible() and window.isActiveWindow():
        window.close()
    else:
        bring_to_front(window)


def bring_to_front(window: MainWindow) -> None:
    window.showNormal()
    window.raise_()
    window.activateWindow()
